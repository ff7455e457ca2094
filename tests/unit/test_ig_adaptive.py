"""Integrated gradients with steps chosen per example (t3vis.explain's default, n_steps=None).

A tiny random BERT with large weights (std 0.5), so that its path integrals are rough enough
that examples need different numbers of steps (from the schedule's first size to several past it).
"""

import numpy as np
import pytest
import torch
from captum_reference import captum_integrated_gradients
from conftest import make_model, make_texts

import t3vis
from t3vis.analysis.saliency.integrated_gradients import STEP_SCHEDULE, first_steps


@pytest.fixture(scope="module")
def rough():
    model, tokenizer = make_model("bert")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    texts = make_texts(12, seed=3)
    return model.eval(), tokenizer, texts, t3vis.explain(model, tokenizer, texts, "integrated_gradients")


def _gap(model, tokenizer, text: str, target: int) -> float:
    """f(x) - f(baseline) of the target logit, from the model's own inputs_embeds (not the tap)."""
    enc = tokenizer([text], return_tensors="pt", return_special_tokens_mask=True)
    base = torch.where(enc["special_tokens_mask"].bool(), enc["input_ids"], tokenizer.pad_token_id)
    with torch.no_grad():
        f_x = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0, target]
        f_b = model(inputs_embeds=model.get_input_embeddings()(base), attention_mask=enc["attention_mask"]
                    ).logits[0, target]
    return float(f_x - f_b)


def test_adaptive_steps_meet_one_percent_completeness(rough):
    model, tokenizer, texts, out = rough
    for a, text in zip(out, texts):
        gap = _gap(model, tokenizer, text, a.target)
        error = abs(float(a.scores.astype(np.float64).sum()) - gap) / abs(gap)
        assert error <= 0.01 + 1e-4, f"{text!r}: {error:.4f} after {a.n_steps} steps"
        assert a.delta_relative is not None and a.delta_relative <= 0.01
    assert len({a.n_steps for a in out}) > 1, "the texts should need different numbers of steps"


def test_an_examples_first_size_is_the_largest_its_length_affords():
    # FIRST_STEPS_BUDGET 1152 steps x tokens, at most 64 steps, at least the schedule's first (16)
    for tokens, steps in ((5, 64), (18, 64), (19, 48), (24, 48), (25, 32), (36, 32), (37, 24), (48, 24),
                          (49, 16), (72, 16), (73, 16), (500, 16)):
        assert STEP_SCHEDULE[first_steps(tokens)] == steps, tokens


def test_adaptive_steps_are_the_smallest_of_the_schedule_from_the_first_that_meets_it(rough):
    model, tokenizer, texts, out = rough
    assert {a.n_steps for a in out} <= set(STEP_SCHEDULE)
    firsts = [first_steps(len(a.scores)) for a in out]
    assert any(STEP_SCHEDULE.index(a.n_steps) > first for a, first in zip(out, firsts)), (
        "some text should need more than its first size")
    for a, text, first in zip(out, texts, firsts):
        size = STEP_SCHEDULE.index(a.n_steps)
        assert size >= first
        fixed = t3vis.explain(model, tokenizer, [text], "integrated_gradients", n_steps=a.n_steps)[0]
        np.testing.assert_allclose(a.scores, fixed.scores, rtol=1e-4, atol=1e-6)
        if size > first:
            fewer = t3vis.explain(model, tokenizer, [text], "integrated_gradients", n_steps=STEP_SCHEDULE[size - 1])[0]
            assert fewer.delta_relative is not None and fewer.delta_relative > 0.01, (
                f"{text!r}: {STEP_SCHEDULE[size - 1]} steps already met it ({fewer.delta_relative:.4f})")


def test_an_explicit_number_of_steps_is_honoured_exactly(rough):
    model, tokenizer, texts, _ = rough
    few = t3vis.explain(model, tokenizer, texts, "integrated_gradients", n_steps=3)
    assert [a.n_steps for a in few] == [3] * len(texts)
    assert max(a.delta_relative for a in few) > 0.01          # not adapted: three steps leave an error
    assert all(a.n_steps is None for a in t3vis.explain(model, tokenizer, texts[:2], "grad_x_input"))


def test_adaptive_result_agrees_with_captum_at_the_same_steps(rough):
    model, tokenizer, texts, out = rough
    for a, text in zip(out, texts):
        ref = captum_integrated_gradients(model, tokenizer, text, a.target, n_steps=a.n_steps)
        assert np.corrcoef(a.scores, ref)[0, 1] >= 0.99, f"{text!r} at {a.n_steps} steps"
        np.testing.assert_allclose(a.scores, ref, rtol=1e-3, atol=1e-4)
