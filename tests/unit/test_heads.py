"""Head importance and masked evaluation on tiny random models."""

import numpy as np
import pytest
import torch
from conftest import gate_gradients_by_finite_differences, make_labels, make_model, make_texts

import t3vis
from t3vis.analysis.heads import evaluate, gate_gradients, head_importance, importance_from_gate_gradients
from t3vis.errors import InvalidInputError, NotFoundError
from t3vis.models.structure import find_attention_layout


def _same(a, b):
    assert a.accuracy == b.accuracy and a.loss == pytest.approx(b.loss, rel=1e-6)
    np.testing.assert_array_equal(a.predictions, b.predictions)
    np.testing.assert_allclose(a.probs, b.probs, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-6, atol=1e-7)


def test_evaluate_repeated_and_remasked_matches_a_fresh_model():
    texts, labels = make_texts(12), make_labels(12)
    model, tokenizer = make_model("bert")
    first = evaluate(model, tokenizer, texts, labels, {1: [0, 2]}, batch_size=5)
    other = evaluate(model, tokenizer, texts, labels, {0: [1], 1: [3]}, batch_size=5)
    again = evaluate(model, tokenizer, texts, labels, {1: [0, 2]}, batch_size=5)
    plain = evaluate(model, tokenizer, texts, labels, batch_size=5)
    _same(first, again)
    fresh, _ = make_model("bert")
    _same(other, evaluate(fresh, tokenizer, texts, labels, {0: [1], 1: [3]}, batch_size=5))
    fresh, _ = make_model("bert")
    _same(plain, evaluate(fresh, tokenizer, texts, labels, {}, batch_size=5))
    assert first.masked_heads == {1: (0, 2)} and plain.masked_heads == {}
    # unmasked, evaluation is a plain eval-mode forward of each example on its own
    fresh.eval()
    with torch.no_grad():
        logits = fresh(**tokenizer([texts[3]], return_tensors="pt")).logits
    np.testing.assert_allclose(plain.probs[3], logits.softmax(-1)[0].numpy(), rtol=1e-4, atol=1e-6)
    assert plain.accuracy == pytest.approx(np.mean(plain.predictions == np.array(labels)))
    assert plain.loss == pytest.approx(plain.losses.mean(), rel=1e-6)


def test_masking_a_whole_layer_changes_the_outputs():
    texts, labels = make_texts(8), make_labels(8)
    model, tokenizer = make_model("bert")
    # at the usual init (std 0.02) every output is ~0.5 whatever the heads do: draw larger weights
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    plain = evaluate(model, tokenizer, texts, labels)
    masked = evaluate(model, tokenizer, texts, labels, {0: [0, 1, 2, 3]})
    assert np.abs(masked.probs - plain.probs).max() > 0.05
    assert not np.allclose(masked.losses, plain.losses)


def test_evaluate_and_importance_leave_the_model_as_found():
    model, tokenizer = make_model("gpt2")
    model.train()
    model.transformer.h[1].eval()                      # a mixed state must come back exactly
    # transformers installs its own output-capturing hooks on the first such forward; ours must not stay
    model(**tokenizer(["good"], return_tensors="pt"), output_attentions=True, output_hidden_states=True)
    modes = [m.training for m in model.modules()]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    texts, labels = make_texts(6), make_labels(6)
    evaluate(model, tokenizer, texts, labels, {0: [1]})
    head_importance(model, tokenizer, texts, labels, method="taylor")
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()] == hooks


def test_gate_importance_is_the_recorders_importance(tmp_path):
    from t3vis import Recorder, open_run

    model, tokenizer = make_model("bert")
    texts, labels = make_texts(10, seed=3), make_labels(10, seed=3)
    Recorder(tmp_path / "run", model, tokenizer, texts, labels, batch_size=4, save_weights=False).snapshot(step=0)
    recorded = open_run(tmp_path / "run").checkpoints[0]
    raw = head_importance(model, tokenizer, texts, labels, normalize=False, batch_size=3)
    np.testing.assert_allclose(raw, recorded.head_importance_raw, rtol=1e-4, atol=1e-7)
    normalized = t3vis.head_importance(model, tokenizer, texts, labels)
    np.testing.assert_allclose(normalized, recorded.head_importance, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, rtol=1e-5)


def test_importance_from_hand_built_gate_gradients():
    # d loss_n / d gate[l, h] for 2 examples, 3 layers, 2 heads
    grads = np.array([[[3, -1], [0, 2], [0, 0]],          # example 0
                      [[-1, 2], [0, -1], [0, 0]]],        # example 1
                     dtype=np.float32)
    # gate (Michel et al.): sum_n |s|.  layer 0: [3 + 1, 1 + 2] = [4, 3]; layer 1: [0, 2 + 1] = [0, 3];
    # layer 2: [0, 0]. (Signed sums would give layer 0 [2, 1]: the magnitude is per example.)
    gate = importance_from_gate_gradients(grads, method="gate", normalize=False)
    np.testing.assert_array_equal(gate, [[4, 3], [0, 3], [0, 0]])
    # normalised per layer to unit L2 norm: [4, 3] / 5 = [.8, .6]; [0, 3] / 3 = [0, 1]; a zero layer stays zero
    np.testing.assert_allclose(importance_from_gate_gradients(grads), [[0.8, 0.6], [0, 1], [0, 0]], rtol=1e-6)
    # taylor: sum_n s ** 2.  layer 0: [9 + 1, 1 + 4] = [10, 5]; layer 1: [0, 4 + 1] = [0, 5]
    taylor = importance_from_gate_gradients(grads, method="taylor", normalize=False)
    np.testing.assert_array_equal(taylor, [[10, 5], [0, 5], [0, 0]])
    # normalised: [10, 5] / sqrt(125) = [2, 1] / sqrt(5) = [.894427, .447214]
    np.testing.assert_allclose(importance_from_gate_gradients(grads, method="taylor"),
                               [[0.894427, 0.447214], [0, 1], [0, 0]], rtol=1e-5)


def test_gate_gradients_match_finite_differences_of_the_loss():
    model, tokenizer = make_model("roberta")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():                              # weights large enough that heads matter visibly
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    model = model.double().eval()
    texts, labels = make_texts(3, seed=5), make_labels(3, seed=5)
    grads = gate_gradients(model, tokenizer, texts, labels, batch_size=2)          # (3, L, H)
    expected = gate_gradients_by_finite_differences(model, tokenizer, texts, labels)
    assert np.abs(expected).max() > 1e-2              # a check against something that is not zero
    np.testing.assert_allclose(grads, expected, rtol=1e-4, atol=1e-6)


def test_taylor_ranks_concentrated_heads_above_spread_ones():
    model, tokenizer = make_model("roberta")
    texts, labels = make_texts(9, seed=5), make_labels(9, seed=5)
    taylor = head_importance(model, tokenizer, texts, labels, method="taylor", normalize=False)
    gate = head_importance(model, tokenizer, texts, labels, method="gate", normalize=False)
    assert np.isfinite(taylor).all() and (taylor >= 0).all() and (taylor > 0).any()
    # sum of squares <= square of sums (equality only for one example): taylor <= gate ** 2
    assert (taylor <= gate.astype(np.float64) ** 2 * (1 + 1e-5)).all()
    # squared per example, so no rescaling of the gate scores gives it
    ratio = taylor / gate
    assert ratio.max() / ratio.min() > 1.5


def test_one_example_and_a_selection_are_valid_scopes():
    model, tokenizer = make_model("distilbert")
    texts, labels = make_texts(6, seed=2), make_labels(6, seed=2)
    grads = gate_gradients(model, tokenizer, texts, labels, batch_size=4)
    one = head_importance(model, tokenizer, texts[4:5], labels[4:5], normalize=False)
    one_taylor = head_importance(model, tokenizer, texts[4:5], labels[4:5], method="taylor", normalize=False)
    # one example: |s| for gate and s ** 2 for taylor, the same gradient as inside a batch of four
    np.testing.assert_allclose(one, np.abs(grads[4]), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(one_taylor, one.astype(np.float64) ** 2, rtol=1e-4, atol=1e-12)
    picked = head_importance(model, tokenizer, [texts[i] for i in (0, 5)], [labels[i] for i in (0, 5)])
    np.testing.assert_allclose(picked, importance_from_gate_gradients(grads[[0, 5]]), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mask, message", [
    ({2: [0]}, r"layer 2 does not exist: the model has layers 0\.\.1"),
    ({1: [0, 4]}, r"head 4 of layer 1 does not exist: every layer has heads 0\.\.3"),
    ({-1: [0]}, r"layers 0\.\.1"),
])
def test_unknown_layers_and_heads_are_not_found(mask, message):
    model, tokenizer = make_model("bert")
    with pytest.raises(NotFoundError, match=message):
        evaluate(model, tokenizer, ["good"], [0], mask)
    assert all(not p._forward_pre_hooks for p in find_attention_layout(model).output_projections)


@pytest.mark.parametrize("texts, labels, mask, message", [
    (["good", "bad"], [0, 2], None, "outside the model's classes 0..1"),
    ([], [], None, "set of examples is empty"),
    (["good"], [0], [1, 2], "must map layer"),
    (["good"], [0], {"one": [0]}, "integer index"),
    (["good"], [0], {0: ["x"]}, "integer index"),
])
def test_bad_input_is_refused(texts, labels, mask, message):
    model, tokenizer = make_model("bert")
    with pytest.raises(InvalidInputError, match=message):
        evaluate(model, tokenizer, texts, labels, mask)


def test_bad_importance_input_is_refused():
    model, tokenizer = make_model("bert")
    with pytest.raises(InvalidInputError, match="choose one of gate, taylor"):
        head_importance(model, tokenizer, ["good"], [0], method="fisher")
    with pytest.raises(InvalidInputError, match="outside the model's classes"):
        head_importance(model, tokenizer, ["good"], [3])


def test_nan_outputs_are_flagged_not_a_crash():
    model, tokenizer = make_model("bert")
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")
    result = evaluate(model, tokenizer, make_texts(3), [0, 1, 0])
    assert result.nan_examples == 3 and np.isnan(result.loss) and result.accuracy == 0.0
    assert (result.predictions == -1).all()
    assert (head_importance(model, tokenizer, make_texts(3), [0, 1, 0], normalize=False) == 0).all()
