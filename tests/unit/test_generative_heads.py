"""Head importance and masked evaluation for language models (causal-lm and seq2seq), per attention stack.

References share nothing with the code under test but the head gates: the model's own
`outputs.loss` of one example at a time, under gates set by hand.
"""

from contextlib import ExitStack

import numpy as np
import pytest
import torch
from conftest import make_generative_model, make_pairs, make_texts

import t3vis
from t3vis.analysis.heads import GenerativeEvaluationResult, evaluate, gate_gradients, head_importance
from t3vis.errors import InvalidInputError, NotFoundError, UnsupportedModelError
from t3vis.models.gates import gated_heads
from t3vis.models.structure import find_stacks


def language_model(kind: str):
    """A float64 tiny model with weights large enough that every head visibly moves the loss.

    T5 computes its attention softmax from float32 scores, and at some weights that rounding
    moves central differences by up to 1e-3 (3 of 9 weight scales and seeds tried); at these
    it stays under 1e-5, far below the gradients (0.02-0.05 in every stack).
    """
    model, tokenizer = make_generative_model(kind)
    std, seed = (0.1, 3) if kind == "t5" else (0.2, 1)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=generator) * std)
    return model.double().eval(), tokenizer


def task_of(model) -> str:
    return "seq2seq" if model.config.is_encoder_decoder else "causal-lm"


def one_example(model, tokenizer, text: str, target: str | None) -> dict:
    """model(**inputs) for one example with labels, as the model's own loss expects them (no padding)."""
    if model.config.is_encoder_decoder:
        source = tokenizer(text, return_tensors="pt")["input_ids"]
        return {"input_ids": source, "labels": tokenizer(text_target=target, return_tensors="pt")["input_ids"]}
    if target is None:                                   # the whole text; the model shifts the labels itself
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        return {"input_ids": ids, "labels": ids.clone()}
    # prompt with special tokens, completion without, then end of sequence; loss on the completion only
    prompt = tokenizer(text)["input_ids"]
    completion = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt + completion])
    return {"input_ids": ids, "labels": torch.tensor([[-100] * len(prompt) + completion])}


def loss_under_gates(model, inputs: dict, gates: dict, stacks=None) -> float:
    """The example's mean target-token NLL in float64 with every stack's heads scaled by gates[stack] (L, H).

    Computed here from the logits: GPT-2's and Llama's own loss casts the logits to float32,
    too coarse for finite differences. Labels go in so that an encoder-decoder builds its
    decoder input from them, as it does for its own loss.
    """
    with torch.no_grad(), ExitStack() as stack:
        for layout in stacks or find_stacks(model):
            stack.enter_context(gated_heads(layout, gates[layout.stack]))
        logits = model(**inputs).logits[0]
    labels = inputs["labels"][0]
    if not model.config.is_encoder_decoder:            # logits at t predict the token at t + 1
        logits, labels = logits[:-1], labels[1:]
    return float(torch.nn.functional.cross_entropy(logits.double(), labels, ignore_index=-100))


def ones(stacks) -> dict:
    return {s.stack: torch.ones(s.num_layers, s.num_heads, dtype=torch.float64) for s in stacks}


# (kind, whole texts or prompt + completion): each family, and both causal-lm example forms
CASES = [("gpt2", "completion"), ("llama", "whole"), ("t5", "target"), ("bart", "target")]
# How close central differences (eps 1e-3) of a float64 model come to the gradient, which is
# kept in float32 (measured: GPT-2 3e-7, BART 1e-7, Llama 7e-5, T5 3e-6): GPT-2 and BART
# compute in float64 throughout; Llama's RMSNorm and T5's layer norm and softmax in float32
FD_TOLERANCE = {"gpt2": 1e-6, "llama": 2e-4, "t5": 1e-4, "bart": 1e-6}


def examples(form: str, n: int = 3, seed: int = 5):
    texts, targets = make_pairs(n, seed=seed)
    return texts, None if form == "whole" else targets


@pytest.mark.parametrize("kind, form", CASES)
def test_gate_gradients_match_finite_differences_of_the_examples_loss(kind, form):
    model, tokenizer = language_model(kind)
    texts, targets = examples(form, n=2)                 # of different lengths: one batch, padded
    grads = gate_gradients(model, tokenizer, texts, task=task_of(model), targets=targets, batch_size=2)
    stacks = find_stacks(model)
    by_stack = grads if isinstance(grads, dict) else {stacks[0].stack: grads}
    assert isinstance(grads, dict) == (len(stacks) > 1)
    assert set(by_stack) == {s.stack for s in stacks}
    # the shorter example, padded in its batch (where padding could leak into the gradient), against
    # central differences of its loss alone; the other example's gradient is the same alone as in the batch
    text, target = texts[1], None if targets is None else targets[1]
    assert len(one_example(model, tokenizer, text, target)["input_ids"][0]) < \
        len(one_example(model, tokenizer, texts[0], None if targets is None else targets[0])["input_ids"][0])
    inputs = one_example(model, tokenizer, text, target)
    eps = 1e-3
    for layout in stacks:
        expected = np.zeros((layout.num_layers, layout.num_heads))
        for layer in range(layout.num_layers):
            for head in range(layout.num_heads):
                up, down = ones(stacks), ones(stacks)
                up[layout.stack][layer, head] += eps
                down[layout.stack][layer, head] -= eps
                expected[layer, head] = (loss_under_gates(model, inputs, up, stacks)
                                         - loss_under_gates(model, inputs, down, stacks)) / (2 * eps)
        assert np.abs(expected).max() > 1e-2, layout.stack       # a check against something that is not zero
        np.testing.assert_allclose(by_stack[layout.stack][1], expected, rtol=0, atol=FD_TOLERANCE[kind],
                                   err_msg=layout.stack)
    alone = gate_gradients(model, tokenizer, texts, task=task_of(model), targets=targets, batch_size=1)
    for stack, g in (alone if isinstance(alone, dict) else {stacks[0].stack: alone}).items():
        np.testing.assert_allclose(by_stack[stack], g, rtol=1e-6, atol=1e-9)
    # Michel et al.'s importance is the summed magnitude, per stack
    raw = head_importance(model, tokenizer, texts, task=task_of(model), targets=targets, normalize=False)
    raw_by_stack = raw if isinstance(raw, dict) else {stacks[0].stack: raw}
    for stack, g in by_stack.items():
        np.testing.assert_allclose(raw_by_stack[stack], np.abs(g).sum(0), rtol=1e-5, atol=1e-7)


def test_importance_does_not_depend_on_the_batch_size_and_keeps_each_stacks_shape():
    model, tokenizer = language_model("bart")
    texts, targets = make_pairs(5, seed=2)
    one = head_importance(model, tokenizer, texts, task="seq2seq", targets=targets, batch_size=1)
    five = head_importance(model, tokenizer, texts, task="seq2seq", targets=targets, batch_size=5)
    assert list(one) == ["encoder", "decoder", "cross"]
    assert {s: a.shape for s, a in one.items()} == {"encoder": (2, 4), "decoder": (3, 4), "cross": (3, 4)}
    for stack in one:
        np.testing.assert_allclose(one[stack], five[stack], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(np.linalg.norm(one[stack], axis=1), 1.0, rtol=1e-6)


def test_importance_is_the_recorders_importance_for_every_stack(tmp_path):
    model, tokenizer = make_generative_model("t5")
    sources, targets = make_pairs(7)
    t3vis.Recorder(tmp_path / "run", model, tokenizer, sources, targets=targets, task="seq2seq", batch_size=3,
                   save_weights=False).snapshot(step=0)
    recorded = t3vis.open_run(tmp_path / "run").checkpoints[0]
    mine = head_importance(model, tokenizer, sources, task="seq2seq", targets=targets, batch_size=2)
    raw = head_importance(model, tokenizer, sources, task="seq2seq", targets=targets, normalize=False)
    for stack in ("encoder", "decoder", "cross"):
        np.testing.assert_allclose(mine[stack], recorded.stack_head_importance(stack), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(raw[stack], recorded.stack_head_importance(stack, raw=True), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kind, form", CASES)
def test_evaluation_with_nothing_masked_is_the_models_own_loss(kind, form):
    model, tokenizer = language_model(kind)
    texts, targets = examples(form, n=4, seed=7)
    result = evaluate(model, tokenizer, texts, task=task_of(model), targets=targets, batch_size=3)
    assert isinstance(result, GenerativeEvaluationResult)
    total_nll = total_tokens = total_right = 0.0
    for n, (text, target) in enumerate(zip(texts, targets or [None] * len(texts))):
        inputs = one_example(model, tokenizer, text, target)
        with torch.no_grad():
            out = model(**inputs)
        assert result.losses[n] == pytest.approx(float(out.loss), rel=1e-6)
        # the predictions and target tokens the model's own loss scores: decoder-only logits at t predict t + 1
        logits, labels = out.logits[0], inputs["labels"][0]
        if not model.config.is_encoder_decoder:
            logits, labels = logits[:-1], labels[1:]
        scored = labels != -100
        right = int((logits[scored].argmax(-1) == labels[scored]).sum())
        assert result.n_tokens[n] == int(scored.sum())
        assert result.token_accuracies[n] == pytest.approx(right / int(scored.sum()))
        assert result.perplexities[n] == pytest.approx(np.exp(float(out.loss)), rel=1e-6)
        total_nll += float(out.loss) * int(scored.sum())
        total_tokens += int(scored.sum())
        total_right += right
    # the set's loss weighs every target token once, as the model's loss over the whole set does
    assert result.loss == pytest.approx(total_nll / total_tokens, rel=1e-6)
    assert result.perplexity == pytest.approx(np.exp(total_nll / total_tokens), rel=1e-6)
    assert result.token_accuracy == pytest.approx(total_right / total_tokens)
    assert result.nan_examples == 0 and result.masked_heads == {}
    assert not result.losses.flags.writeable


def test_the_sets_loss_is_the_models_loss_over_one_padded_batch():
    model, tokenizer = language_model("bart")
    texts, targets = make_pairs(4, seed=3)
    result = evaluate(model, tokenizer, texts, task="seq2seq", targets=targets)
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    labels = tokenizer(text_target=targets, padding=True, return_tensors="pt")["input_ids"]
    labels[labels == tokenizer.pad_token_id] = -100
    with torch.no_grad():
        expected = float(model(**enc, labels=labels).loss)          # mean over every target token of the set
    assert result.loss == pytest.approx(expected, rel=1e-6)


MASKS = {"gpt2": {0: [1, 3], 1: [2]},
         "llama": {1: [0, 1]},
         "t5": {"encoder": {1: [0]}, "cross": {0: [2], 2: [1, 3]}},
         "bart": {"decoder": {0: [0]}, "cross": {1: [3]}}}


@pytest.mark.parametrize("kind, form", CASES)
def test_masked_evaluation_is_a_forward_with_zero_gates(kind, form):
    model, tokenizer = language_model(kind)
    texts, targets = examples(form, n=4, seed=9)
    mask = MASKS[kind]
    plain = evaluate(model, tokenizer, texts, task=task_of(model), targets=targets, batch_size=3)
    masked = evaluate(model, tokenizer, texts, masked_heads=mask, task=task_of(model), targets=targets, batch_size=3)
    stacks = find_stacks(model)
    gates = ones(stacks)
    per_stack = mask if model.config.is_encoder_decoder else {stacks[0].stack: mask}
    for stack, layers in per_stack.items():
        for layer, heads in layers.items():
            gates[stack][layer, heads] = 0.0
    for n, (text, target) in enumerate(zip(texts, targets or [None] * len(texts))):
        expected = loss_under_gates(model, one_example(model, tokenizer, text, target), gates, stacks)
        assert masked.losses[n] == pytest.approx(expected, rel=1e-6)
    assert np.abs(masked.losses - plain.losses).max() > 1e-3
    expected_echo = {s: {layer: tuple(h) for layer, h in m.items()} for s, m in per_stack.items()}
    assert masked.masked_heads == (expected_echo if model.config.is_encoder_decoder else expected_echo["decoder"])


def test_masking_a_cross_attention_head_changes_the_loss_and_masking_nothing_does_not():
    model, tokenizer = language_model("t5")
    texts, targets = make_pairs(5, seed=4)
    plain = evaluate(model, tokenizer, texts, task="seq2seq", targets=targets)
    for nothing, echo in (({}, {}), ({"cross": {}}, {}), ({"encoder": {}, "decoder": {1: []}}, {"decoder": {1: ()}})):
        same = evaluate(model, tokenizer, texts, masked_heads=nothing, task="seq2seq", targets=targets)
        np.testing.assert_array_equal(same.losses, plain.losses)
        assert same.masked_heads == echo
    cross = evaluate(model, tokenizer, texts, masked_heads={"cross": {2: [1]}}, task="seq2seq", targets=targets)
    assert np.abs(cross.losses - plain.losses).max() > 1e-3
    assert cross.masked_heads == {"cross": {2: (1,)}}


def test_evaluate_importance_and_generate_leave_the_model_as_found():
    model, tokenizer = make_generative_model("bart")
    for module in model.modules():                         # dropout on, so that train mode would show
        if isinstance(getattr(module, "dropout", None), float):
            module.dropout = 0.3
    model.train()
    model.model.decoder.layers[1].eval()                   # a mixed state must come back exactly
    texts, targets = make_pairs(4)
    # transformers installs its own output-capturing hooks on the first such forward; ours must not stay
    model(**tokenizer(texts[:1], return_tensors="pt"), labels=tokenizer(text_target=targets[:1],
                                                                        return_tensors="pt")["input_ids"],
          output_attentions=True, output_hidden_states=True)
    model.zero_grad(set_to_none=True)
    modes = [m.training for m in model.modules()]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    first = evaluate(model, tokenizer, texts, masked_heads={"cross": {0: [1]}}, task="seq2seq", targets=targets)
    head_importance(model, tokenizer, texts, task="seq2seq", targets=targets, method="taylor")
    t3vis.generate(model, tokenizer, texts, 4, masked_heads={"encoder": {0: [0]}})
    again = evaluate(model, tokenizer, texts, masked_heads={"cross": {0: [1]}}, task="seq2seq", targets=targets)
    np.testing.assert_array_equal(first.losses, again.losses)       # eval mode: dropout off
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()] == hooks


@pytest.mark.parametrize("mask, error, message", [
    ({"crosss": {0: [1]}}, NotFoundError, r"stack 'crosss' does not exist: the model has the stacks encoder, "
                                          r"decoder, cross"),
    ({0: [1]}, InvalidInputError, r"several attention stacks \(encoder, decoder, cross\).*e\.g\. \{'decoder'"),
    ({"decoder": {3: [0]}}, NotFoundError, r"layer 3 does not exist: the decoder has layers 0\.\.2"),
    ({"encoder": {1: [4]}}, NotFoundError, r"head 4 of layer 1 does not exist: every encoder layer has heads 0\.\.3"),
    ([("cross", 0)], InvalidInputError, "must map stack"),
])
def test_bad_masks_on_an_encoder_decoder_are_refused(mask, error, message):
    model, tokenizer = make_generative_model("t5")
    texts, targets = make_pairs(2)
    with pytest.raises(error, match=message):
        evaluate(model, tokenizer, texts, masked_heads=mask, task="seq2seq", targets=targets)
    assert all(not m._forward_pre_hooks for s in find_stacks(model) for m in s.output_projections)


def test_bad_generative_input_is_refused():
    model, tokenizer = make_generative_model("gpt2")
    texts = make_texts(2)
    with pytest.raises(UnsupportedModelError, match="task='causal-lm'"):
        evaluate(model, tokenizer, texts, [0, 1])                   # classification is the default task
    with pytest.raises(InvalidInputError, match="not both"):
        evaluate(model, tokenizer, texts, ["a", "b"], task="causal-lm", targets=["good", "bad"])
    with pytest.raises(InvalidInputError, match=r"completion of example 1 .* is empty"):
        head_importance(model, tokenizer, texts, task="causal-lm", targets=["good", " "])
    with pytest.raises(UnsupportedModelError, match="not an encoder-decoder"):
        gate_gradients(model, tokenizer, texts, task="seq2seq", targets=["good", "bad"])
    t5, t5_tokenizer = make_generative_model("t5")
    with pytest.raises(InvalidInputError, match="seq2seq needs a target text"):
        evaluate(t5, t5_tokenizer, texts, task="seq2seq")
    with pytest.raises(InvalidInputError, match="masked_heads="):
        evaluate(t5, t5_tokenizer, texts, {"cross": {0: [1]}}, task="seq2seq", targets=["good", "bad"])
