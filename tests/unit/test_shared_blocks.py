"""ALBERT: one transformer block run by every layer. Each run is a layer of its own."""

import numpy as np
import pytest
import torch
from conftest import gate_gradients_by_finite_differences, make_labels, make_model, make_texts

import t3vis
from t3vis.analysis.heads import evaluate, gate_gradients, head_importance
from t3vis.errors import UnsupportedModelError
from t3vis.models.gates import gated_heads, mask_to_gates
from t3vis.models.structure import find_attention_layout
from t3vis.record.probe import probe

L, H = 3, 4       # make_model("albert"): 3 layers over one shared block, 4 heads, 32 dims


def _albert(seed: int = 0, scale: float = 0.2):
    """A tiny ALBERT whose heads matter (at the usual init, std 0.02, every output is ~0.5)."""
    model, tokenizer = make_model("albert", seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=generator) * scale)
    return model.eval(), tokenizer


def _shared_attention(model):
    return model.albert.encoder.albert_layer_groups[0].albert_layers[0].attention


def _hooks(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


def test_one_shared_block_gives_one_layer_per_run():
    model, _ = make_model("albert")
    layout = find_attention_layout(model)
    assert (layout.num_layers, layout.num_heads, layout.head_dim, layout.hidden_size) == (L, H, 8, 32)
    assert layout.shares_blocks
    dense = _shared_attention(model).dense
    assert all(p is dense for p in layout.output_projections)       # the attention output, not the FFN
    assert [site.call for site in layout.layers] == [0, 1, 2]
    assert layout.layers_by_projection() == {dense: [0, 1, 2]}


def test_the_model_returns_one_hidden_state_and_one_attention_map_per_run():
    model, tokenizer = make_model("albert")
    enc = tokenizer(["the movie was great", "bad"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.eval()(**enc, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == L + 1 and len(out.attentions) == L
    assert all(a.shape == (2, H, 6, 6) for a in out.attentions)
    # three different maps, as the three runs see three different inputs
    assert not torch.allclose(out.attentions[0], out.attentions[1])
    assert not torch.allclose(out.attentions[1], out.attentions[2])


def test_several_attention_modules_per_shared_block_are_refused():
    from transformers import AlbertConfig, AutoModelForSequenceClassification

    _, tokenizer = make_model("albert")
    config = AlbertConfig(vocab_size=len(tokenizer), embedding_size=16, hidden_size=32, num_hidden_layers=2,
                          num_hidden_groups=1, inner_group_num=2, num_attention_heads=4, intermediate_size=37,
                          max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    # transformers installs its own output-capturing hooks on the first such forward; ours must not stay
    model(**tokenizer(["good"], return_tensors="pt"), output_attentions=True, output_hidden_states=True)
    hooks = _hooks(model)
    with pytest.raises(UnsupportedModelError, match=r"5 hidden states for its 2-layer encoder.*one attention module"):
        find_attention_layout(model)
    assert _hooks(model) == hooks


def test_gate_gradients_of_each_run_match_finite_differences():
    model, tokenizer = _albert(seed=1)
    model = model.double()
    texts, labels = make_texts(3, seed=5), make_labels(3, seed=5)
    grads = gate_gradients(model, tokenizer, texts, labels, batch_size=2)          # (3, L, H)
    layout = find_attention_layout(model)
    expected = gate_gradients_by_finite_differences(model, tokenizer, texts, labels)
    assert np.abs(expected).max() > 1e-2
    # the runs of the one block are told apart: their gradients are not one number spread three times
    assert not np.allclose(expected[:, 0], expected[:, 1], rtol=1e-2)
    assert not np.allclose(expected[:, 1], expected[:, 2], rtol=1e-2)
    np.testing.assert_allclose(grads, expected, rtol=1e-4, atol=1e-6)
    # the probe pass computes the same numbers
    recorded = probe(model, tokenizer, texts, labels, batch_size=3, layout=layout)
    np.testing.assert_allclose(recorded.gate_grads, grads, rtol=1e-4, atol=1e-7)


def _manual_head_mask(model, run: int, head: int):
    """Reference: a hook of its own that zeroes one head's slice on the run-th call of the shared dense."""
    calls = [0]

    def hook(module, args):
        i, calls[0] = calls[0], calls[0] + 1
        if i != run:
            return None
        context = args[0].clone()
        context[..., head * 8:(head + 1) * 8] = 0.0
        return (context,)
    return _shared_attention(model).dense.register_forward_pre_hook(hook)


def test_masking_a_head_masks_it_in_its_own_run_only():
    model, tokenizer = _albert()
    texts, labels = make_texts(8, seed=2), make_labels(8, seed=2)
    plain = evaluate(model, tokenizer, texts, labels, batch_size=4)
    in_layer_0 = evaluate(model, tokenizer, texts, labels, {0: [2]}, batch_size=4)
    in_layer_1 = evaluate(model, tokenizer, texts, labels, {1: [2]}, batch_size=4)
    assert np.abs(in_layer_0.probs - in_layer_1.probs).max() > 1e-3
    assert np.abs(in_layer_0.probs - plain.probs).max() > 1e-3
    assert np.abs(in_layer_1.probs - plain.probs).max() > 1e-3
    for run, result in ((0, in_layer_0), (1, in_layer_1)):
        reference = []
        for text in texts:                          # one hook, so one count, per forward pass
            handle = _manual_head_mask(model, run, head=2)
            try:
                with torch.no_grad():
                    reference.append(model(**tokenizer([text], return_tensors="pt")).logits.softmax(-1)[0].numpy())
            finally:
                handle.remove()
        np.testing.assert_allclose(result.probs, np.stack(reference), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layer", range(L))
def test_masking_every_head_of_a_layer_zeroes_that_runs_attention_output(layer):
    model, tokenizer = _albert(seed=3)
    enc = tokenizer(make_texts(4, seed=7), padding=True, return_tensors="pt")
    layout = find_attention_layout(model)
    dense = _shared_attention(model).dense
    calls = [0]

    def bias_only_on_that_run(module, args, output):
        # zero context in, so the projection gives its bias alone
        i, calls[0] = calls[0], calls[0] + 1
        return module.bias.expand_as(output) if i == layer else None

    with torch.no_grad():
        plain = model(**enc).logits
        handle = dense.register_forward_hook(bias_only_on_that_run)
        try:
            reference = model(**enc).logits
        finally:
            handle.remove()
        with gated_heads(layout, mask_to_gates(layout, {layer: list(range(H))})):
            gated = model(**enc).logits
    assert calls[0] == L
    assert (reference - plain).abs().max() > 1e-3
    torch.testing.assert_close(gated, reference, rtol=1e-5, atol=1e-6)


def test_the_run_count_restarts_at_every_forward_pass():
    model, tokenizer = _albert()
    layout = find_attention_layout(model)
    enc = tokenizer(make_texts(3), padding=True, return_tensors="pt")
    with torch.no_grad(), gated_heads(layout, mask_to_gates(layout, {2: [0, 1]})):
        first = model(**enc).logits
        second = model(**enc).logits               # a count that did not restart would refuse a 4th run
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_calling_the_shared_block_more_often_than_its_layers_is_refused():
    model, _ = _albert()
    layout = find_attention_layout(model)
    hidden = torch.randn(1, 5, 32)
    block = layout.blocks[0]
    with torch.no_grad(), gated_heads(layout, mask_to_gates(layout, None)):
        for _ in range(L):
            block(hidden)                          # no forward pass of the model restarts the count
        with pytest.raises(RuntimeError, match="ran 4 times in one forward pass"):
            block(hidden)
    assert all(not p._forward_pre_hooks for p in layout.output_projections)
    assert not model._forward_pre_hooks


def test_analysis_and_saliency_work_and_leave_no_hooks():
    model, tokenizer = _albert()
    model(**tokenizer(["good"], return_tensors="pt"), output_attentions=True, output_hidden_states=True)
    hooks = _hooks(model)
    texts, labels = make_texts(6, seed=1), make_labels(6, seed=1)
    importance = head_importance(model, tokenizer, texts, labels)
    assert importance.shape == (L, H) and np.isfinite(importance).all()
    np.testing.assert_allclose(np.linalg.norm(importance, axis=1), 1.0, rtol=1e-5)
    evaluate(model, tokenizer, texts, labels, {1: [0, 3]})
    probe(model, tokenizer, texts, labels, batch_size=4)
    ig = t3vis.explain(model, tokenizer, texts[:2], "integrated_gradients", n_steps=32)
    assert all(a.delta is not None and a.delta < 1e-3 for a in ig)
    rollout = t3vis.explain(model, tokenizer, texts[:2], "attention_rollout")
    for a in rollout:
        assert a.scores.sum() == pytest.approx(1.0, abs=1e-5)
    for method in ("gradient", "grad_x_input", "lrp"):
        (a,) = t3vis.explain(model, tokenizer, texts[:1], method)
        assert np.isfinite(a.scores).all() and np.abs(a.scores).max() > 0
    assert _hooks(model) == hooks
    assert all(p.grad is None for p in model.parameters())


def test_a_recorded_albert_run_has_one_state_and_one_importance_row_per_layer(tmp_path):
    model, tokenizer = _albert()
    texts, labels = make_texts(10, seed=4), make_labels(10, seed=4)
    t3vis.Recorder(tmp_path / "run", model, tokenizer, texts, labels, batch_size=4,
                   save_weights=False).snapshot(step=0)
    run = t3vis.open_run(tmp_path / "run")
    ck = run.checkpoints[0]
    assert (run.num_layers, run.num_heads, run.hidden_size) == (L, H, 32)
    states = np.asarray(ck.hidden_states)
    assert states.shape == (L + 1, 10, 32)
    assert np.asarray(ck.head_importance).shape == (L, H)
    raw = head_importance(model, tokenizer, texts, labels, normalize=False)
    np.testing.assert_allclose(ck.head_importance_raw, raw, rtol=1e-4, atol=1e-7)
    # state l is the [CLS] vector after run l of the shared block (0: the projected embeddings)
    with torch.no_grad():
        out = model(**tokenizer([texts[6]], return_tensors="pt"), output_hidden_states=True)
    for layer in range(L + 1):
        np.testing.assert_allclose(states[layer, 6].astype(np.float32), out.hidden_states[layer][0, 0].numpy(),
                                   rtol=2e-3, atol=2e-3)
    assert not np.allclose(states[1], states[2], atol=1e-2)
    entropy = ck.attention_summary("entropy")
    assert entropy.shape == (L, H) and (entropy > 0).all()
    assert not np.allclose(entropy[0], entropy[1])          # each run summarised on its own
