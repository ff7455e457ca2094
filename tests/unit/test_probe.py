"""The fused probe pass on every supported family: structure, gradients, and a model left as found."""

import numpy as np
import pytest
import torch
from conftest import ARCHITECTURES, make_labels, make_model, make_texts

from t3vis.errors import InvalidInputError, UnsupportedModelError
from t3vis.models.gates import gated_heads, mask_to_gates
from t3vis.models.structure import find_attention_layout
from t3vis.record.probe import pool, probe
from t3vis.tasks.base import Stream


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_structure_is_found_for_every_family(kind):
    model, _ = make_model(kind)
    layout = find_attention_layout(model)
    assert (layout.num_layers, layout.num_heads, layout.head_dim, layout.hidden_size) == (2, 4, 8, 32)
    # the projections found are the ones inside the blocks, one per layer, all different
    assert len({id(p) for p in layout.output_projections}) == 2
    for block, proj in zip(layout.blocks, layout.output_projections):
        assert any(m is proj for m in block.modules())


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_probe_shapes_and_outputs_match_a_plain_forward(kind):
    model, tokenizer = make_model(kind, num_labels=3)
    texts, labels = make_texts(10), make_labels(10, num_labels=3)
    result = probe(model, tokenizer, texts, labels, batch_size=4)
    assert result.hidden.shape == (3, 10, 32) and result.hidden.dtype == np.float16
    assert result.gate_grads.shape == (10, 2, 4)
    model.eval()
    with torch.no_grad():
        for i in (0, 7):
            enc = tokenizer([texts[i]], return_tensors="pt")
            out = model(**enc, output_hidden_states=True)
            np.testing.assert_allclose(result.logits[i], out.logits[0].numpy(), rtol=1e-4, atol=1e-5)
            loss = torch.nn.functional.cross_entropy(out.logits, torch.tensor([labels[i]]))
            assert result.loss[i] == pytest.approx(loss.item(), rel=1e-4)
            # one unpadded text: encoders pool the first token ([CLS], <s>), GPT-2 the last one
            expect = out.hidden_states[-1][0, -1 if kind == "gpt2" else 0].numpy()
            np.testing.assert_allclose(result.hidden[-1, i].astype(np.float32), expect, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_gate_gradients_match_finite_differences(kind):
    model, tokenizer = make_model(kind)
    model = model.double()
    layout = find_attention_layout(model)
    texts, labels = make_texts(3, seed=4), make_labels(3, seed=4)
    result = probe(model, tokenizer, texts, labels, batch_size=3, layout=layout)
    model.eval()
    enc = tokenizer([texts[1]], return_tensors="pt")
    gold = torch.tensor([labels[1]])
    eps = 1e-5

    def loss_with(layer, head, value):
        gates = torch.ones(2, 4, dtype=torch.float64)
        gates[layer, head] = value
        with torch.no_grad(), gated_heads(layout, gates):
            return torch.nn.functional.cross_entropy(model(**enc).logits, gold).item()

    for layer, head in [(0, 0), (1, 3), (0, 2)]:
        numeric = (loss_with(layer, head, 1 + eps) - loss_with(layer, head, 1 - eps)) / (2 * eps)
        assert result.gate_grads[1, layer, head] == pytest.approx(numeric, rel=1e-4, abs=1e-7)


def test_gating_a_head_to_zero_changes_the_output_and_hooks_come_off():
    model, tokenizer = make_model("bert")
    layout = find_attention_layout(model)
    model.eval()
    enc = tokenizer(make_texts(2), padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**enc).logits
        with gated_heads(layout, mask_to_gates(layout, {1: [0, 2]})):
            masked = model(**enc).logits
        after = model(**enc).logits
    assert not torch.allclose(before, masked)
    assert torch.equal(before, after)
    assert all(not p._forward_pre_hooks for p in layout.output_projections)


def test_probe_leaves_the_model_as_it_found_it():
    model, tokenizer = make_model("bert")
    model.train()
    model.bert.encoder.layer[1].eval()  # a mixed state must come back exactly
    # transformers installs its own output-capturing hooks on the first such forward; ours must not stay
    model(**tokenizer(["good"], return_tensors="pt"), output_attentions=True, output_hidden_states=True)
    hooks = _hooks(model)
    modes = [m.training for m in model.modules()]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    probe(model, tokenizer, make_texts(6), make_labels(6))
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert _hooks(model) == hooks


def _hooks(model):
    return [(name, tuple(m._forward_hooks), tuple(m._forward_pre_hooks)) for name, m in model.named_modules()]


def test_probe_keeps_existing_gradients_untouched():
    """The paper's code leaked probe gradients into the next optimizer step."""
    model, tokenizer = make_model("bert")
    enc = tokenizer(make_texts(4), padding=True, return_tensors="pt")
    model(**enc, labels=torch.tensor(make_labels(4))).loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    probe(model, tokenizer, make_texts(6), make_labels(6))
    assert all(torch.equal(grads[n], p.grad) for n, p in model.named_parameters() if n in grads)


def test_attention_summaries_are_consistent():
    model, tokenizer = make_model("bert")
    result = probe(model, tokenizer, make_texts(8), make_labels(8), thumbnail_size=4)
    summary = result.attention.finish()
    # shares of attention mass lie in [0, 1]; entropy is at most log(max tokens)
    for name in ("to_first", "to_separator", "to_self", "to_previous", "to_next"):
        values = summary[f"attention_{name}"]
        assert values.shape == (2, 4) and (values >= 0).all() and (values <= 1 + 1e-6).all()
    assert (summary["attention_entropy"] <= np.log(16) + 1e-5).all()
    # every thumbnail row over positions that all examples cover sums to at most one
    thumbs = summary["thumbnails"].astype(np.float32)
    assert thumbs.shape == (2, 4, 4, 4)
    assert (thumbs.sum(-1) <= 1 + 1e-2).all()
    assert summary["thumbnail_counts"][0, 0] == 8


def test_thumbnails_exclude_padding():
    model, tokenizer = make_model("bert")
    short, long_ = "good", "the movie was really very very good and fun"
    result = probe(model, tokenizer, [short, long_], [0, 1], thumbnail_size=8, batch_size=2)
    counts = result.attention.finish()["thumbnail_counts"]
    n_short = len(tokenizer(short)["input_ids"])  # 3 tokens with [CLS] and [SEP]
    assert counts[0, 0] == 2 and counts[n_short - 1, n_short - 1] == 2
    assert counts[n_short, n_short] == 1 and counts[0, n_short] == 1


def _stream(valid, pooled=None):
    valid = torch.tensor(valid).bool()
    return Stream(torch.zeros_like(valid, dtype=torch.long), valid, valid if pooled is None else torch.tensor(pooled))


def test_mean_and_last_pooling_ignore_padding():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    mask = _stream([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool(hidden, mask, "mean")[0], hidden[0, :2].mean(0))
    assert torch.equal(pool(hidden, mask, "last")[0], hidden[0, 1])
    assert torch.equal(pool(hidden, mask, "last")[1], hidden[1, 2])
    left = _stream([[0, 1, 1], [1, 1, 1]])
    assert torch.equal(pool(hidden, left, "last")[0], hidden[0, 2])


def test_mean_pooling_averages_only_the_positions_the_task_pools():
    # a decoder's target tokens: positions 1 and 2 of row 0, position 2 of row 1
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    targets = _stream([[1, 1, 1], [1, 1, 1]], [[False, True, True], [False, False, True]])
    assert torch.equal(pool(hidden, targets, "mean")[0], torch.tensor([3.0, 4.0]))    # rows (2, 3), (4, 5)
    assert torch.equal(pool(hidden, targets, "mean")[1], torch.tensor([10.0, 11.0]))


@pytest.mark.parametrize("labels, message", [
    ([0, 5], "outside the model's classes 0..1"),
    ([0, -1], "outside the model's classes"),
    ([0], "2 texts but 1 labels"),
])
def test_bad_labels_are_refused_with_a_clear_message(labels, message):
    model, tokenizer = make_model("bert")
    with pytest.raises(InvalidInputError, match=message):
        probe(model, tokenizer, ["good", "bad"], labels)


def test_an_empty_probe_set_is_refused():
    model, tokenizer = make_model("bert")
    with pytest.raises(InvalidInputError, match="probe set is empty"):
        probe(model, tokenizer, [], [])


def test_sdpa_attention_is_refused_with_the_fix_named():
    from transformers import AutoModelForSequenceClassification

    model, _ = make_model("bert")
    sdpa = AutoModelForSequenceClassification.from_config(model.config, attn_implementation="sdpa")
    with pytest.raises(UnsupportedModelError, match='attn_implementation="eager"'):
        find_attention_layout(sdpa)


def test_nan_outputs_are_recorded_and_flagged_not_a_crash():
    model, tokenizer = make_model("bert")
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")
    result = probe(model, tokenizer, make_texts(4), make_labels(4))
    assert result.nan.all()
    assert np.isnan(result.loss).all()
    assert np.isfinite(result.gate_grads).all() and (result.gate_grads == 0).all()
