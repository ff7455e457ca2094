"""The saliency suite on the real all-MiniLM-L6-v2 (fresh 2-class head) and Rotten Tomatoes sentences."""

import numpy as np
import pytest
import torch
from captum_reference import captum_integrated_gradients

import t3vis
from t3vis.analysis.saliency import METHODS
from t3vis.defaults import load_demo_data, load_demo_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo():
    torch.manual_seed(0)                       # the classification head is freshly initialised
    model, tokenizer = load_demo_model()
    frame = load_demo_data()
    rows = np.random.default_rng(0).permutation(len(frame))[:24]
    return model, tokenizer, frame["text"].iloc[rows].tolist()


@pytest.fixture(scope="module")
def ig(demo):
    model, tokenizer, texts = demo
    return t3vis.explain(model, tokenizer, texts, "integrated_gradients", n_steps=50)


def test_integrated_gradients_are_complete_on_the_demo_model(ig):
    relative = np.array([a.delta_relative for a in ig], dtype=float)
    assert len(relative) == 24 and np.isfinite(relative).all()
    assert np.median(relative) <= 0.02
    # the absolute error is in logit units, and no more than the relative one allows
    absolute = np.array([a.delta for a in ig])
    assert np.isfinite(absolute).all() and (absolute >= 0).all()
    assert np.median(absolute) <= 0.02 * np.median([abs(a.scores.astype(float).sum()) for a in ig])


def test_integrated_gradients_agree_with_captum_on_the_demo_model(demo, ig):
    model, tokenizer, texts = demo
    model.eval()
    for a, text in list(zip(ig, texts))[:4]:
        ref = captum_integrated_gradients(model, tokenizer, text, a.target, n_steps=50)
        assert ref.shape == a.scores.shape
        assert np.corrcoef(a.scores, ref)[0, 1] >= 0.99


def test_every_method_on_the_demo_model_leaves_it_as_found(demo):
    model, tokenizer, texts = demo
    model.train()
    flags = [m.training for m in model.modules()]
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    for method in METHODS:
        if method == "attention_rollout":   # transformers hooks its own output capture once per model
            hooks = None
        out = t3vis.explain(model, tokenizer, texts[:6], method, n_steps=8)
        assert [a.tokens[0] for a in out] == ["[CLS]"] * 6 and all(a.tokens[-1] == "[SEP]" for a in out)
        assert all(np.isfinite(a.scores).all() and a.scores.shape == (len(a.tokens),) for a in out)
        assert [m.training for m in model.modules()] == flags
        assert all(p.grad is None for p in model.parameters())
        assert not model.get_input_embeddings()._forward_hooks
        if hooks is not None:
            assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks
    model.eval()


def test_bfloat16_integrated_gradients_stay_complete_and_agree_with_float32(demo, ig):
    model, tokenizer, texts = demo
    fast = t3vis.explain(model, tokenizer, texts, "integrated_gradients", n_steps=50, precision="bfloat16")
    deltas = np.array([a.delta_relative for a in fast], dtype=float)
    assert np.median(deltas) <= 0.02
    # the end points stay float32, so the delta sees the bfloat16 error: it is not float32's
    assert np.median(deltas) > np.median([a.delta_relative for a in ig])
    assert np.median([a.delta for a in fast]) > np.median([a.delta for a in ig])
    for a, b in zip(fast, ig):
        assert a.target == b.target and a.scores.dtype == np.float32
        assert np.corrcoef(a.scores, b.scores)[0, 1] >= 0.99


def test_every_method_runs_in_bfloat16_and_agrees_with_float32(demo):
    model, tokenizer, texts = demo
    for method in METHODS:
        full = t3vis.explain(model, tokenizer, texts[:4], method, n_steps=8)
        half = t3vis.explain(model, tokenizer, texts[:4], method, n_steps=8, precision="bfloat16")
        for a, b in zip(half, full):
            assert a.scores.dtype == np.float32 and np.isfinite(a.scores).all()
            assert np.corrcoef(a.scores, b.scores)[0, 1] >= 0.95, method
