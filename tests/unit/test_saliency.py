"""The saliency suite on tiny random models of every family: maths checked, model left as found."""

import numpy as np
import pytest
import torch
from captum_reference import captum_integrated_gradients
from conftest import ARCHITECTURES, make_model, make_texts

import t3vis
from t3vis.analysis.saliency import METHODS, Attribution
from t3vis.analysis.saliency._common import embedding_tap, encode
from t3vis.analysis.saliency.attention_rollout import rollout
from t3vis.analysis.saliency.lrp import ConservativePropagation
from t3vis.errors import InvalidInputError


def _sharpen(model, std=0.3, seed=0):
    """Random weights large enough that the logits depend visibly on the tokens."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def _state(model):
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _logits(model, tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_every_method_runs_on_every_family_and_leaves_the_model_as_found(kind):
    model, tokenizer = make_model(kind, num_labels=3)
    texts = make_texts(5)
    # transformers installs its own output-capturing hooks on the first forward that asks for
    # attention weights, once per model; ours must not stay
    with torch.no_grad():
        predicted = model.eval()(**tokenizer(texts, padding=True, return_tensors="pt"),
                                 output_attentions=True).logits.argmax(-1).tolist()
    model.train()
    before, hooks = _state(model), _hooks(model)
    for method in METHODS:
        out = t3vis.explain(model, tokenizer, texts, method, n_steps=8, batch_size=6)
        assert len(out) == 5 and all(isinstance(a, Attribution) and a.method == method for a in out)
        for a, text, pred in zip(out, texts, predicted):
            assert a.scores.dtype == np.float32 and a.scores.shape == (len(a.tokens),)
            assert np.isfinite(a.scores).all() and a.target == pred
            assert len(a.tokens) == len(tokenizer(text)["input_ids"])
            assert (a.delta is not None) == (method == "integrated_gradients")
        assert _state(model) == before and _hooks(model) == hooks
        assert not model.get_input_embeddings()._forward_hooks
        assert all(p.grad is None for p in model.parameters())
    assert model.training


def test_explain_is_deterministic_in_train_mode_and_accepts_one_target_per_text():
    model, tokenizer = make_model("bert", num_labels=3)
    texts = make_texts(4)
    model.train()
    a = t3vis.explain(model, tokenizer, texts, "grad_x_input", target=[0, 1, 2, 1])
    b = t3vis.explain(model, tokenizer, texts, "grad_x_input", target=[0, 1, 2, 1])
    assert [x.target for x in a] == [0, 1, 2, 1]
    assert all(np.array_equal(x.scores, y.scores) for x, y in zip(a, b))  # dropout off
    c = t3vis.explain(model, tokenizer, texts, "grad_x_input", target=2)
    assert not np.allclose(a[0].scores, c[0].scores)  # target 0 and target 2 differ


def _fd_gradient(model, tokenizer, text, target, h=1e-6):
    """(T, E) central finite differences of the target logit in the word embeddings, float64."""
    enc = tokenizer([text], return_tensors="pt")
    with embedding_tap(model) as tap, torch.no_grad():
        emb = tap.embed(enc["input_ids"])[0]                                   # (T, E)
        T, E = emb.shape
        steps = torch.eye(T * E, dtype=emb.dtype).view(T * E, T, E) * h       # (T*E, T, E): one coordinate each
        tap.replacement = torch.cat([emb + steps, emb - steps])                # (2*T*E, T, E)
        batch = {k: v.expand(2 * T * E, -1) for k, v in enc.items()}
        logits = model(**batch).logits[:, target]                              # (2*T*E,)
    return emb, ((logits[:T * E] - logits[T * E:]) / (2 * h)).view(T, E)


def test_gradients_match_finite_differences_in_float64():
    model, tokenizer = make_model("bert")
    model = _sharpen(model).double().eval()
    text = "the movie was not fun"
    emb, fd = _fd_gradient(model, tokenizer, text, target=1)
    grad = t3vis.explain(model, tokenizer, [text], "gradient", target=1)[0].scores
    gxi = t3vis.explain(model, tokenizer, [text], "grad_x_input", target=1)[0].scores
    np.testing.assert_allclose(grad, fd.norm(dim=-1).numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(gxi, (fd * emb).sum(-1).numpy(), rtol=1e-4, atol=1e-6)
    assert np.abs(gxi).max() > 1e-3  # a check against something that is not zero


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_integrated_gradients_match_captum(kind):
    model, tokenizer = make_model(kind)
    model = _sharpen(model, std=0.1).eval()
    texts = make_texts(4, seed=3)
    ours = t3vis.explain(model, tokenizer, texts, "integrated_gradients", n_steps=20, batch_size=16)
    for a, text in zip(ours, texts):
        ref = captum_integrated_gradients(model, tokenizer, text, a.target, n_steps=20)
        assert np.corrcoef(a.scores, ref)[0, 1] >= 0.99
        np.testing.assert_allclose(a.scores, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


def test_pair_batches_cover_every_pair_once_within_rows_and_token_budget():
    from t3vis.analysis.saliency.integrated_gradients import pair_batches

    lengths = np.array([40, 3, 17, 128, 9, 64])
    n_steps, sorted_lengths = 7, np.sort(lengths)
    batches = pair_batches(lengths, n_steps, batch_size=20, max_tokens=400)
    flat = np.concatenate(batches)
    np.testing.assert_array_equal(flat, np.arange(len(lengths) * n_steps))
    for batch in batches:
        width = sorted_lengths[batch[-1] // n_steps]      # ascending: the last row is the widest
        assert len(batch) <= 20
        assert len(batch) * width <= 400 or len(batch) == 1
    assert any(len(b) == 20 for b in batches) and any(len(b) < 20 for b in batches[:-1])


def test_integrated_gradients_token_budget_does_not_change_the_answer(monkeypatch):
    from t3vis.analysis.saliency import integrated_gradients

    model, tokenizer = make_model("bert")
    texts = make_texts(4, seed=2)
    plain = t3vis.explain(model, tokenizer, texts, "integrated_gradients", n_steps=8, batch_size=64)
    monkeypatch.setattr(integrated_gradients, "MAX_TOKENS_PER_PASS", 20)     # about one row per pass
    capped = t3vis.explain(model, tokenizer, texts, "integrated_gradients", n_steps=8, batch_size=64)
    for a, b in zip(plain, capped):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-6)


def test_integrated_gradients_end_points_keep_to_the_token_cap(monkeypatch):
    from t3vis.analysis.saliency import integrated_gradients

    model, tokenizer = make_model("bert")
    texts = make_texts(12, seed=4)
    longest = max(len(x) for x in tokenizer(texts)["input_ids"])
    cap = 3 * longest                                  # room for three rows of the longest text
    monkeypatch.setattr(integrated_gradients, "MAX_TOKENS_PER_PASS", cap)
    passes = []                                        # (grad enabled, padded tokens) per forward

    def count(module, args, kwargs):
        passes.append((torch.is_grad_enabled(), kwargs["input_ids"].numel()))

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        out = t3vis.explain(model, tokenizer, texts, "integrated_gradients", n_steps=4, batch_size=64)
    finally:
        handle.remove()
    end_point = [tokens for grad, tokens in passes if not grad]
    path = [tokens for grad, tokens in passes if grad]
    # 12 texts: 24 end-point rows and 48 path rows, at most three rows a pass
    assert len(end_point) >= 24 // 3 and len(path) >= 48 // 3
    assert max(end_point) <= cap and max(path) <= cap
    assert all(a.delta is not None and np.isfinite(a.delta) for a in out)


class _LinearInEmbeddings(torch.nn.Module):
    """logit_c = sum_t mask_t (e_t . w_c): linear in the word embeddings, so IG is exact."""

    def __init__(self, table, weights):
        super().__init__()
        self.embed = torch.nn.Embedding.from_pretrained(torch.tensor(table, dtype=torch.float32))
        self.weights = torch.nn.Parameter(torch.tensor(weights, dtype=torch.float32))   # (C, E)
        self.config = type("Config", (), {"num_labels": len(weights)})()

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids, attention_mask):
        embedded = self.embed(input_ids) * attention_mask[..., None]                     # (B, T, E)
        return type("Output", (), {"logits": embedded.sum(1) @ self.weights.T})()       # (B, C)


def _linear_model():
    """Word-level BERT tokenizer ([PAD]=0, [CLS]=2, [SEP]=3) and 2-d embeddings with small integers."""
    _, tokenizer = make_model("bert")
    table = np.zeros((len(tokenizer), 2))
    vocab = tokenizer.get_vocab()
    for token, vector in {"[PAD]": (1, 0), "[CLS]": (7, 7), "[SEP]": (-1, 4),
                          "the": (3, 1), "movie": (2, 5), "film": (4, 0)}.items():
        table[vocab[token]] = vector
    weights = [(0, 1), (2, -1)]                       # w_0, w_1
    return _LinearInEmbeddings(table, weights), tokenizer


def test_integrated_gradients_are_exact_on_a_model_linear_in_the_embeddings():
    model, tokenizer = _linear_model()
    # "the film" -> [CLS] the film [SEP]; baseline [CLS] [PAD] [PAD] [SEP]. IG_t = (e_t - b_t) . w_c:
    #   class 1, w = (2, -1): [CLS] 0; the (3,1)-(1,0) = (2,1) -> 4 - 1 = 3; film (3,0) -> 6; [SEP] 0
    #   class 0, w = (0, 1):  the (2,1) -> 1; film (3,0) -> 0
    # f(x) - f(b) is the sum of those (9 and 1): completeness holds exactly.
    one, zero = (t3vis.explain(model, tokenizer, ["the film"], "integrated_gradients", target=c, n_steps=5)[0]
                 for c in (1, 0))
    assert one.tokens == ["[CLS]", "the", "film", "[SEP]"]
    np.testing.assert_allclose(one.scores, [0, 3, 6, 0], atol=1e-5)
    np.testing.assert_allclose(zero.scores, [0, 1, 0, 0], atol=1e-5)
    assert one.delta == pytest.approx(0, abs=1e-5) and one.delta_relative == pytest.approx(0, abs=1e-6)
    assert zero.delta == pytest.approx(0, abs=1e-5)
    # gradient x input is w . e_t: [CLS] (7,7) -> 7, the 5, film 8, [SEP] (-1,4) -> -6
    gxi = t3vis.explain(model, tokenizer, ["the film"], "grad_x_input", target=1)[0]
    np.testing.assert_allclose(gxi.scores, [7, 5, 8, -6], atol=1e-5)
    assert gxi.delta is None and gxi.delta_relative is None


def test_relative_delta_is_none_where_the_end_points_agree():
    model, tokenizer = _linear_model()
    # "the movie", class 1, w = (2, -1): the (2,1) -> 3; movie (2,5)-(1,0) = (1,5) -> 2 - 5 = -3.
    # f(x) = 7 + 5 - 1 - 6 = 5 and f(b) = 7 + 2 + 2 - 6 = 5: no gap, so no relative error to give,
    # while the absolute one is still measured (the scores sum to 0 = f(x) - f(b)).
    out = t3vis.explain(model, tokenizer, ["the movie"], "integrated_gradients", target=1, n_steps=5)[0]
    np.testing.assert_allclose(out.scores, [0, 3, -3, 0], atol=1e-5)
    assert out.delta_relative is None
    assert out.delta == pytest.approx(0, abs=1e-5)


def test_integrated_gradients_delta_is_absolute_against_the_model_own_end_points():
    model, tokenizer = make_model("bert")
    model = _sharpen(model, std=0.3).eval()
    texts = make_texts(3, seed=5)
    out = t3vis.explain(model, tokenizer, texts, "integrated_gradients", n_steps=2)   # few steps: a visible error
    for a, text in zip(out, texts):
        enc = tokenizer([text], return_tensors="pt", return_special_tokens_mask=True)
        base = torch.where(enc["special_tokens_mask"].bool(), enc["input_ids"], tokenizer.pad_token_id)
        with torch.no_grad():     # f(b) by the model's own inputs_embeds, not by the tap
            f_x = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0, a.target]
            f_b = model(inputs_embeds=model.get_input_embeddings()(base),
                        attention_mask=enc["attention_mask"]).logits[0, a.target]
        gap = float(f_x - f_b)
        error = abs(float(a.scores.astype(np.float64).sum()) - gap)
        assert a.delta == pytest.approx(error, rel=1e-3, abs=1e-5)
        assert a.delta_relative == pytest.approx(error / abs(gap), rel=1e-3)
    assert min(a.delta for a in out) > 0.01    # two steps leave an error to measure


def test_integrated_gradients_batching_does_not_change_the_answer_and_completes():
    model, tokenizer = make_model("roberta")
    model = _sharpen(model, std=0.1)
    texts = make_texts(5, seed=1)
    one = t3vis.explain(model, tokenizer, texts, "integrated_gradients", n_steps=16, batch_size=7)
    all_at_once = t3vis.explain(model, tokenizer, texts, "integrated_gradients", n_steps=16, batch_size=500)
    for a, b in zip(one, all_at_once):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-6)
    assert np.median([a.delta_relative for a in one]) < 0.02
    assert [a.delta for a in one] == pytest.approx([a.delta for a in all_at_once], rel=1e-3, abs=1e-5)


def test_integrated_gradients_baseline_keeps_special_tokens():
    _, tokenizer = make_model("bert")
    enc = encode(tokenizer, ["the movie"], max_length=16)
    assert enc.tokens[0] == ["[CLS]", "the", "movie", "[SEP]"]
    assert enc.baseline_ids(0).tolist() == [tokenizer.cls_token_id, 0, 0, tokenizer.sep_token_id]


def _homogeneous(kind):
    """ReLU model with every bias, LayerNorm shift and position embedding zeroed: f(c e) = c f(e)
    once attention weights and LayerNorm scales are constants, so relevance must sum to the logit."""
    model, tokenizer = make_model(kind)
    if kind == "distilbert":
        model.config.activation = "relu"
        for layer in model.distilbert.transformer.layer:
            layer.ffn.activation = torch.nn.ReLU()
    else:
        for block in model.transformer.h:
            block.mlp.act = torch.nn.ReLU()
    model = _sharpen(model, std=0.3, seed=1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if (p.dim() == 1 and not name.endswith("weight")) or "position" in name or "wpe" in name:
                p.zero_()
    return model.eval(), tokenizer


@pytest.mark.parametrize("kind", ["distilbert", "gpt2"])
def test_lrp_conserves_relevance_where_plain_gradient_x_input_does_not(kind):
    model, tokenizer = _homogeneous(kind)
    texts = make_texts(6, seed=2)
    logits = _logits(model, tokenizer, texts)
    lrp = t3vis.explain(model, tokenizer, texts, "lrp", target=1)
    gxi = t3vis.explain(model, tokenizer, texts, "grad_x_input", target=1)
    for i, (a, b) in enumerate(zip(lrp, gxi)):
        logit = float(logits[i, 1])
        assert abs(logit) > 1e-3
        assert abs(a.scores.sum() - logit) <= 0.05 * abs(logit)
        assert abs(b.scores.sum() - logit) > 0.05 * abs(logit)  # the rules are what conserves


def test_conservative_propagation_leaves_the_forward_unchanged():
    model, tokenizer = make_model("bert")
    texts = make_texts(3)
    plain = _logits(model.eval(), tokenizer, texts)
    with ConservativePropagation():
        ruled = _logits(model, tokenizer, texts)
    torch.testing.assert_close(ruled, plain, rtol=1e-5, atol=1e-6)


def test_rollout_matches_hand_computed_two_layer_examples():
    # Abnar & Zuidema: per layer M = row-normalised (mean over heads of A) + I, which for
    # row-stochastic A is 0.5 A + 0.5 I; the rollout is M_2 M_1 (the later layer acts last).
    # 2 tokens. Layer 1, two heads [[1, 0], [0, 1]] and [[1, 0], [1, 0]]: mean A = [[1, 0], [.5, .5]],
    #   M_1 = [[1, 0], [.25, .75]].  Layer 2, one head [[0, 1], [1, 0]]: M_2 = [[.5, .5], [.5, .5]].
    #   M_2 M_1: each row is .5 [1, 0] + .5 [.25, .75] = [.625, .375].
    layer_1 = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])     # (H=2, 2, 2)
    layer_2 = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])                               # (H=1, 2, 2)
    expected = torch.tensor([[0.625, 0.375], [0.625, 0.375]], dtype=torch.float64)
    torch.testing.assert_close(rollout([layer_1, layer_2]), expected)
    # 3 tokens. Layer 1 attends to the next token (cyclic): M_1 = [[.5, .5, 0], [0, .5, .5], [.5, 0, .5]].
    # Layer 2 attends to token 0 only: M_2 = [[1, 0, 0], [.5, .5, 0], [.5, 0, .5]].
    #   row 0 = M_1[0]                 = [.5, .5, 0]
    #   row 1 = .5 M_1[0] + .5 M_1[1]  = [.25, .25, 0] + [0, .25, .25]  = [.25, .5, .25]
    #   row 2 = .5 M_1[0] + .5 M_1[2]  = [.25, .25, 0] + [.25, 0, .25]  = [.5, .25, .25]
    # (the other order, M_1 M_2, would give row 0 = [.75, .25, 0])
    shift = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])
    first = torch.tensor([[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    expected = torch.tensor([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.5, 0.25, 0.25]], dtype=torch.float64)
    torch.testing.assert_close(rollout([shift, first]), expected)
    # one layer of uniform attention over 3 tokens: M = .5 J/3 + .5 I, diagonal 1/6 + 1/2 = 2/3, else 1/6
    one_layer = rollout([torch.full((2, 3, 3), 1 / 3)])
    torch.testing.assert_close(one_layer, torch.tensor([[4.0, 1, 1], [1, 4, 1], [1, 1, 4]], dtype=torch.float64) / 6)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_rollout_scores_are_the_pooled_row_of_a_stochastic_matrix(kind):
    model, tokenizer = make_model(kind)
    model.eval()
    texts = make_texts(4)
    out = t3vis.explain(model, tokenizer, texts, "attention_rollout")
    for a, text in zip(out, texts):
        assert a.scores.sum() == pytest.approx(1.0, abs=1e-5) and (a.scores >= 0).all()
        enc = tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            att = model(**enc, output_attentions=True).attentions
        matrix = rollout([x[0] for x in att])
        row = matrix[0] if kind == "bert" else matrix[-1]
        np.testing.assert_allclose(a.scores, row.float().numpy(), rtol=1e-5, atol=1e-6)


def test_bad_input_says_what_to_fix():
    model, tokenizer = make_model("bert")
    with pytest.raises(InvalidInputError, match=r"integrated_gradients.*attention_rollout"):
        t3vis.explain(model, tokenizer, ["fun"], "saliency")
    with pytest.raises(InvalidInputError, match=r"target 2 is outside the model's classes 0\.\.1"):
        t3vis.explain(model, tokenizer, ["fun"], "gradient", target=2)
    with pytest.raises(InvalidInputError, match="one per text"):
        t3vis.explain(model, tokenizer, ["fun", "dull"], "gradient", target=[0])
    with pytest.raises(InvalidInputError, match="no texts"):
        t3vis.explain(model, tokenizer, [], "lrp")
    with pytest.raises(InvalidInputError, match="n_steps"):
        t3vis.explain(model, tokenizer, ["fun"], "integrated_gradients", n_steps=0)
    with pytest.raises(InvalidInputError, match="precision 'float16'; choose one of float32, bfloat16"):
        t3vis.explain(model, tokenizer, ["fun"], "gradient", precision="float16")
    gpt, gpt_tok = make_model("gpt2")
    with pytest.raises(InvalidInputError, match="no tokens"):
        t3vis.explain(gpt, gpt_tok, ["fun", ""], "gradient")
    assert _hooks(model) == 0 and _hooks(gpt) == 0
