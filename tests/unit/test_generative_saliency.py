"""Token attribution for generative tasks (causal-lm, seq2seq) on tiny random models: maths checked
against Captum, hand-written autograd and the models' own forward passes."""

import numpy as np
import pytest
import torch
from conftest import make_generative_model, make_model, make_pairs, make_texts

import t3vis
from t3vis.analysis.saliency import METHODS
from t3vis.analysis.saliency.generative import SequenceAttribution
from t3vis.analysis.saliency.lrp import conservative_rules
from t3vis.errors import InvalidInputError, UnsupportedModelError

SEQ2SEQ = ("t5", "bart")


def _model(kind, smooth=False):
    """float64, eval; smooth=True swaps T5's ReLU for GELU (IG's quadrature converges slowly over kinks)."""
    model, tokenizer = make_generative_model(kind)
    if smooth and kind == "t5":
        for module in model.modules():
            if hasattr(module, "act") and isinstance(module.act, torch.nn.ReLU):
                module.act = torch.nn.GELU()
    return model.double().eval(), tokenizer


def _explain(kind, model, tokenizer, method, n=2, **kwargs):
    sources, targets = make_pairs(n, seed=4)
    if kind in SEQ2SEQ:
        return t3vis.explain(model, tokenizer, sources, method, task="seq2seq", targets=targets, **kwargs)
    return t3vis.explain(model, tokenizer, sources, method, task="causal-lm", **kwargs)


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _reference_rows(model, a: SequenceAttribution, labels=None, embed_baseline=False, tokenizer=None):
    """Per target token, by hand: (log p(label), gradient (n_input, E), embeddings (n_input, E)) from one
    full, uncut forward on the model's own inputs_embeds (decoder_inputs_embeds for a seq2seq model)."""
    ids = torch.tensor(tokenizer.convert_tokens_to_ids(a.input_tokens))[None]               # (1, n_input)
    n_src = a.stream_lengths["input"]
    if embed_baseline:
        special = torch.tensor(np.isin(ids[0].numpy(), tokenizer.all_special_ids))[None]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids = torch.where(special, ids, pad)
    if model.config.is_encoder_decoder:
        src = model.get_encoder().get_input_embeddings()(ids[:, :n_src]).detach().requires_grad_(True)
        dec = model.get_decoder().get_input_embeddings()(ids[:, n_src:]).detach().requires_grad_(True)
        logits = model(inputs_embeds=src, decoder_inputs_embeds=dec).logits[0]             # (n_dec, V)
        leaves, at = [src, dec], a.predicted_at - n_src
    else:
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb).logits[0]                                          # (n_input, V)
        leaves, at = [emb], a.predicted_at
    labels = a.target_ids if labels is None else labels
    out = []
    for k, label in enumerate(labels):
        value = logits[at[k]].log_softmax(-1)[label]
        grads = torch.autograd.grad(value, leaves, retain_graph=True)
        out.append((value.item(), torch.cat([g[0] for g in grads]), torch.cat([x[0].detach() for x in leaves])))
    return out


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_integrated_gradients_match_captum_llm_attribution(kind):
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

    model, tokenizer = make_generative_model(kind)
    model.eval()
    text = make_texts(1, seed=3)[0]
    ours = t3vis.explain(model, tokenizer, [text], "integrated_gradients", task="causal-lm", n_steps=20)[0]
    ids = tokenizer(text)["input_ids"]
    added = len(tokenizer("")["input_ids"])          # llama's "<s>": TextTokenInput's text must not repeat it
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    specials = list(tokenizer.all_special_ids)
    llm = LLMGradientAttribution(LayerIntegratedGradients(model, model.get_input_embeddings()), tokenizer)
    compared = 0
    for r, k in enumerate(ours.rows):
        # Captum asked about this one target token, with the whole prefix before it as the input
        prefix = ids[:ours.predicted_at[k] + 1]
        inp = TextTokenInput(" ".join(tokenizer.convert_ids_to_tokens(prefix[added:])), tokenizer,
                             baselines=pad, skip_tokens=specials)
        assert inp.inp_tensor[0].tolist() == prefix
        ref = llm.attribute(inp, target=torch.tensor([ours.target_ids[k]]), n_steps=20,
                            method="gausslegendre").token_attr[0].detach().numpy()
        kept = ~np.isin(prefix, specials)
        mine = ours.scores[r, :len(prefix)]
        np.testing.assert_allclose(mine[kept], ref, rtol=1e-4, atol=1e-6)
        assert np.all(mine[~kept] == 0) and np.all(ours.scores[r, len(prefix):] == 0)
        if len(ref) > 1:
            assert np.corrcoef(mine[kept], ref)[0, 1] >= 0.99
            compared += 1
    assert compared >= 3


@pytest.mark.parametrize("kind", ["gpt2", "llama", "t5", "bart"])
def test_integrated_gradients_complete_against_the_model_own_end_points(kind):
    model, tokenizer = _model(kind, smooth=True)
    out = _explain(kind, model, tokenizer, "integrated_gradients", n_steps=50)
    for a in out:
        n_input = len(a.input_tokens)
        assert a.scores.shape == (len(a.target_tokens), n_input) and a.scores.dtype == np.float32
        if kind in SEQ2SEQ:       # one row over the source and the decoder inputs, source first
            assert list(a.stream_lengths) == ["input", "decoder_input"]
            assert sum(a.stream_lengths.values()) == n_input and a.stream_lengths["decoder_input"] == len(a.rows)
        f_x = [value for value, _, _ in _reference_rows(model, a, tokenizer=tokenizer)]
        f_b = [value for value, _, _ in _reference_rows(model, a, tokenizer=tokenizer, embed_baseline=True)]
        gap = np.subtract(f_x, f_b)
        error = np.abs(a.scores.astype(np.float64).sum(1) - gap)
        np.testing.assert_allclose(a.delta, error, rtol=1e-3, atol=1e-6)
        moving = np.abs(gap) > 1e-3
        assert moving.sum() >= 2
        assert np.all(a.delta_relative[moving] <= 0.01)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "t5", "bart"])
def test_gradient_and_grad_x_input_match_hand_autograd(kind):
    model, tokenizer = _model(kind)
    grad = _explain(kind, model, tokenizer, "gradient", n=1)[0]
    gxi = _explain(kind, model, tokenizer, "grad_x_input", n=1)[0]
    reference = _reference_rows(model, gxi, tokenizer=tokenizer)
    expected_norm = np.stack([g.norm(dim=-1).numpy() for _, g, _ in reference])
    expected_gxi = np.stack([(g * e).sum(-1).numpy() for _, g, e in reference])
    np.testing.assert_allclose(grad.scores, expected_norm, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(gxi.scores, expected_gxi, rtol=1e-4, atol=1e-7)
    for r, k in enumerate(gxi.rows):        # causal masking: exactly zero after the predicting position
        assert np.all(gxi.scores[r, gxi.predicted_at[k] + 1:] == 0)
        assert np.abs(gxi.scores[r, :gxi.predicted_at[k] + 1]).max() > 0
    assert np.abs(expected_gxi).max() > 1e-3


@pytest.mark.parametrize(("kind", "method"), [("llama", "integrated_gradients"), ("bart", "grad_x_input"),
                                              ("t5", "lrp"), ("gpt2", "attention_rollout")])
def test_one_asked_token_equals_its_row_of_the_full_matrix_and_costs_one_unit(kind, method):
    model, tokenizer = _model(kind)
    full = _explain(kind, model, tokenizer, method, n=1, n_steps=8)[0]
    rows = []

    def count(module, args, kwargs):
        rows.append(next(v for v in kwargs.values() if torch.is_tensor(v)).shape[0])

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        one = _explain(kind, model, tokenizer, method, n=1, n_steps=8, token=2)[0]
        two = _explain(kind, model, tokenizer, method, n=1, n_steps=8, token=[-1, 1])[0]
    finally:
        handle.remove()
    n = len(full.target_ids)
    assert one.rows.tolist() == [2] and two.rows.tolist() == [n - 1, 1]
    np.testing.assert_allclose(one.scores[0], full.scores[2], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(two.scores, full.scores[[n - 1, 1]], rtol=1e-5, atol=1e-7)
    if method == "integrated_gradients":        # one token: its 8 path rows and its 2 end points, no more
        assert sum(rows[:len(rows) // 2]) <= 8 + 2 and sum(rows) <= 3 * (8 + 2)


@pytest.mark.parametrize("kind", ["llama", "bart"])
def test_foil_explains_the_difference_of_two_log_probabilities(kind):
    model, tokenizer = _model(kind, smooth=True)
    foil = "awful"
    foil_id = tokenizer.convert_tokens_to_ids(foil)
    gxi = _explain(kind, model, tokenizer, "grad_x_input", n=1, foil=foil)[0]
    assert gxi.foil_ids.tolist() == [foil_id] * len(gxi.rows)
    target = _reference_rows(model, gxi, tokenizer=tokenizer)
    against = _reference_rows(model, gxi, labels=[foil_id] * len(gxi.rows), tokenizer=tokenizer)
    expected = np.stack([((g_t - g_f) * e).sum(-1).numpy() for (_, g_t, e), (_, g_f, _) in zip(target, against)])
    np.testing.assert_allclose(gxi.scores, expected, rtol=1e-4, atol=1e-7)       # linearity: row(t) - row(foil)
    ig = _explain(kind, model, tokenizer, "integrated_gradients", n=1, foil=foil_id, n_steps=50)[0]
    f_x = [t[0] - f[0] for t, f in zip(target, against)]
    base_t = _reference_rows(model, ig, tokenizer=tokenizer, embed_baseline=True)
    base_f = _reference_rows(model, ig, labels=[foil_id] * len(ig.rows), tokenizer=tokenizer, embed_baseline=True)
    gap = np.subtract(f_x, [t[0] - f[0] for t, f in zip(base_t, base_f)])
    np.testing.assert_allclose(ig.scores.astype(np.float64).sum(1), gap, rtol=0.01, atol=1e-5)
    one = _explain(kind, model, tokenizer, "grad_x_input", n=1, token=[0, 1], foil=[foil_id, "bad"])[0]
    np.testing.assert_allclose(one.scores[0], gxi.scores[0], rtol=1e-5, atol=1e-7)
    assert one.foil_ids.tolist() == [foil_id, tokenizer.convert_tokens_to_ids("bad")]


class _Heaviside(torch.nn.Module):
    """A gate of 0 or 1: act(gate(x)) * up(x) stays homogeneous of degree one in x."""

    def forward(self, x):
        return (x > 0).to(x.dtype)


def _homogeneous_llama():
    """Llama has no biases and no position embeddings; with a Heaviside gate in its MLP, and the
    attention weights and RMSNorm scales held constant by LRP's rules, its logits are linear in
    the word embeddings, so relevance must be conserved exactly."""
    model, tokenizer = make_generative_model("llama")
    for layer in model.model.layers:
        layer.mlp.act_fn = _Heaviside()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.double().eval(), tokenizer


def test_lrp_conserves_the_log_probability_gained_over_a_uniform_guess_on_llama():
    model, tokenizer = _homogeneous_llama()
    vocab = model.config.vocab_size
    texts = make_texts(3, seed=2)
    lrp = t3vis.explain(model, tokenizer, texts, "lrp", task="causal-lm")
    gxi = t3vis.explain(model, tokenizer, texts, "grad_x_input", task="causal-lm")
    for a, b in zip(lrp, gxi):
        log_p = np.array([value for value, _, _ in _reference_rows(model, a, tokenizer=tokenizer)])
        expected = log_p + np.log(vocab)           # log p - log(1/V): zero logits predict uniformly
        assert np.abs(expected).min() > 1e-2
        np.testing.assert_allclose(a.scores.astype(np.float64).sum(1), expected, rtol=1e-3)
        assert np.abs(b.scores.sum(1) - expected).max() > 0.05 * np.abs(expected).max()   # the rules conserve
    foil = t3vis.explain(model, tokenizer, texts[:1], "lrp", task="causal-lm", foil="the")[0]
    the = tokenizer.convert_tokens_to_ids("the")
    log_p_t = [v for v, _, _ in _reference_rows(model, foil, tokenizer=tokenizer)]
    log_p_f = [v for v, _, _ in _reference_rows(model, foil, labels=[the] * len(foil.rows), tokenizer=tokenizer)]
    np.testing.assert_allclose(foil.scores.astype(np.float64).sum(1), np.subtract(log_p_t, log_p_f), rtol=1e-3,
                               atol=1e-6)


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_rms_norm_rules_leave_the_forward_unchanged_and_detach_the_scale(kind):
    model, _ = _model(kind)
    norm = next(m for m in model.modules() if "RMSNorm" in type(m).__name__ or type(m).__name__ == "T5LayerNorm")
    x = torch.randn(2, 5, model.config.hidden_size if kind == "llama" else model.config.d_model,
                    dtype=torch.float64, requires_grad=True)
    plain = norm(x)
    before = _hooks(model)
    with conservative_rules(model):
        ruled = norm(x)
        assert _hooks(model) > before
    assert _hooks(model) == before
    torch.testing.assert_close(ruled, plain)
    # with 1/rms constant the norm is linear: its gradient x input sums to the output exactly
    (grad,) = torch.autograd.grad(ruled.sum(), x)
    torch.testing.assert_close((grad * x).sum(), ruled.sum())
    (plain_grad,) = torch.autograd.grad(plain.sum(), x)
    # x / rms(x) is homogeneous of degree 0 (but for eps): unruled, gradient x input sums to about nothing
    assert abs((plain_grad * x).sum().item()) < 1e-3 * abs(plain.sum().item())


class _OddNorm(torch.nn.Module):
    """Named like a norm, normalises by the max: no rule can hold its scale."""

    def __init__(self, width):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(width))

    def forward(self, x):
        return x / x.abs().amax(-1, keepdim=True) * self.weight


def test_lrp_refuses_a_norm_it_cannot_hold_and_names_it():
    model, tokenizer = make_generative_model("llama")
    model.model.layers[1].post_attention_layernorm = _OddNorm(model.config.hidden_size)
    with pytest.raises(UnsupportedModelError, match=r"model\.layers\.1\.post_attention_layernorm \(_OddNorm\)"):
        t3vis.explain(model, tokenizer, ["the movie"], "lrp", task="causal-lm")
    assert _hooks(model) == 0


def test_attention_rollout_rows_are_rollout_rows_of_the_predicting_positions():
    from t3vis.analysis.saliency.attention_rollout import rollout

    model, tokenizer = _model("gpt2")
    a = _explain("gpt2", model, tokenizer, "attention_rollout", n=1)[0]
    ids = torch.tensor(tokenizer.convert_tokens_to_ids(a.input_tokens))[None]
    with torch.no_grad():
        attentions = model(input_ids=ids, output_attentions=True).attentions
    matrix = rollout([x[0] for x in attentions]).numpy()
    np.testing.assert_allclose(a.scores, matrix[a.predicted_at], rtol=1e-5, atol=1e-6)
    for kind in SEQ2SEQ:
        model, tokenizer = _model(kind)
        b = _explain(kind, model, tokenizer, "attention_rollout", n=1)[0]
        np.testing.assert_allclose(b.scores.sum(1), 1.0, rtol=1e-5)
        assert (b.scores >= 0).all() and b.scores[:, :b.stream_lengths["input"]].sum() > 0
        for r, k in enumerate(b.rows):
            assert np.all(b.scores[r, b.predicted_at[k] + 1:] == 0)


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_every_method_leaves_the_model_as_found(kind):
    model, tokenizer = make_generative_model(kind)
    # transformers installs its own output-capturing hooks on the first forward that asks for
    # attention weights, once per model; ours must not stay
    ids = tokenizer(["the movie"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        model(input_ids=ids, decoder_input_ids=ids if kind in SEQ2SEQ else None, output_attentions=True)
    model.train()
    hooks = _hooks(model)
    for method in METHODS:
        out = _explain(kind, model, tokenizer, method, n=2, n_steps=4, batch_size=5)
        assert all(isinstance(a, SequenceAttribution) and np.isfinite(a.scores).all() for a in out)
        assert (out[0].delta is not None) == (method == "integrated_gradients")
        assert _hooks(model) == hooks and model.training
        assert all(p.grad is None for p in model.parameters())


def test_bad_input_says_what_to_fix():
    model, tokenizer = make_generative_model("bart")
    gpt, gpt_tok = make_generative_model("gpt2")
    sources, targets = make_pairs(2)
    with pytest.raises(InvalidInputError, match="seq2seq needs a target text"):
        t3vis.explain(model, tokenizer, sources, "gradient", task="seq2seq")
    with pytest.raises(InvalidInputError, match="foil 'zebra' is not a token"):
        t3vis.explain(model, tokenizer, sources, "gradient", task="seq2seq", targets=targets, foil="zebra")
    with pytest.raises(InvalidInputError, match="not a token id of the model's vocabulary"):
        t3vis.explain(gpt, gpt_tok, sources, "gradient", task="causal-lm", foil=10_000)
    with pytest.raises(InvalidInputError, match="2 foils for 1 asked target tokens"):
        t3vis.explain(gpt, gpt_tok, sources, "gradient", task="causal-lm", token=0, foil=["fun", "bad"])
    with pytest.raises(InvalidInputError, match=r"token index 99 is out of range: example 0 has \d+ target tokens"):
        t3vis.explain(model, tokenizer, sources, "gradient", task="seq2seq", targets=targets, token=99)
    with pytest.raises(InvalidInputError, match="target= names a class"):
        t3vis.explain(gpt, gpt_tok, sources, "gradient", 1, task="causal-lm")
    with pytest.raises(InvalidInputError, match="attention_rollout does not depend on the target"):
        t3vis.explain(gpt, gpt_tok, sources, "attention_rollout", task="causal-lm", foil="fun")
    with pytest.raises(UnsupportedModelError, match="encoder-decoder"):
        t3vis.explain(model, tokenizer, sources, "gradient", task="causal-lm")
    classifier, cls_tok = make_model("bert")
    with pytest.raises(InvalidInputError, match="targets= is for generative tasks"):
        t3vis.explain(classifier, cls_tok, sources, "gradient", targets=targets)
    assert _hooks(model) == 0 and _hooks(gpt) == 0
