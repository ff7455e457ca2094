"""Greedy generation against a step-by-step argmax loop written here: one text at a time, no padding."""

from contextlib import ExitStack

import numpy as np
import pytest
import torch
from conftest import GENERATIVE, make_generative_model, make_model, make_texts

import t3vis
from t3vis.analysis.generation import MAX_NEW_TOKENS, generate
from t3vis.errors import InvalidInputError, NotFoundError, UnsupportedModelError
from t3vis.models.gates import gated_heads
from t3vis.models.structure import find_stacks


def language_model(kind: str, seed: int = 3, dtype=torch.float64):
    """Weights large enough that the model writes varied tokens with distinct probabilities."""
    model, tokenizer = make_generative_model(kind)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return model.to(dtype).eval(), tokenizer


def reference(model, tokenizer, text: str, steps: int, gates: dict | None = None):
    """(tokens, probabilities): at each step the argmax of the model's logits for the whole sequence so far."""
    eos = model.generation_config.eos_token_id
    source = tokenizer(text, return_tensors="pt")["input_ids"]
    sequence = [model.config.decoder_start_token_id] if model.config.is_encoder_decoder else source[0].tolist()
    tokens, probs = [], []
    with torch.no_grad(), ExitStack() as stack:
        for layout in find_stacks(model) if gates else ():
            stack.enter_context(gated_heads(layout, gates[layout.stack]))
        for _ in range(steps):
            ids = torch.tensor([sequence])
            if model.config.is_encoder_decoder:
                logits = model(input_ids=source, decoder_input_ids=ids).logits[0, -1]
            else:
                logits = model(input_ids=ids).logits[0, -1]
            token = int(logits.argmax())
            tokens.append(token)
            probs.append(float(torch.softmax(logits.double(), -1)[token]))
            sequence.append(token)
            if token == eos:
                break
    return tokens, probs


@pytest.mark.parametrize("kind", GENERATIVE)
def test_greedy_generation_is_the_argmax_at_every_step(kind):
    model, tokenizer = language_model(kind)
    texts = make_texts(5)
    results = generate(model, tokenizer, texts, 7, batch_size=3)
    assert [r.prompt for r in results] == texts
    distinct = set()
    for text, result in zip(texts, results):
        tokens, probs = reference(model, tokenizer, text, 7)
        assert result.token_ids.tolist() == tokens
        np.testing.assert_allclose(result.probs, probs, rtol=0, atol=1e-6)
        assert result.tokens == tokenizer.convert_ids_to_tokens(tokens)
        assert result.text == tokenizer.decode(tokens, skip_special_tokens=True)
        assert result.finished == (tokens[-1] == model.generation_config.eos_token_id)
        assert not result.token_ids.flags.writeable and not result.probs.flags.writeable
        distinct.update(tokens)
    assert len(distinct) > 2                                   # the model writes something worth comparing


@pytest.mark.parametrize("kind", GENERATIVE)
def test_the_batch_size_does_not_change_what_is_written(kind):
    model, tokenizer = language_model(kind, dtype=torch.float32)
    texts = make_texts(3, seed=4)                         # of different lengths: padded together
    assert len({len(ids) for ids in tokenizer(texts)["input_ids"]}) > 1
    together = generate(model, tokenizer, texts, 6, batch_size=3)
    alone = [generate(model, tokenizer, [text], 6)[0] for text in texts]
    for a, b in zip(together, alone):
        assert a.token_ids.tolist() == b.token_ids.tolist()
        np.testing.assert_allclose(a.probs, b.probs, rtol=0, atol=1e-6)
    again = generate(model, tokenizer, texts, 6, batch_size=2)
    for a, b in zip(together, again):
        assert a.token_ids.tolist() == b.token_ids.tolist()


def test_generation_stops_at_the_end_of_sequence_token_and_at_max_new_tokens():
    model, tokenizer = language_model("gpt2")
    texts = make_texts(3, seed=2)
    free = generate(model, tokenizer, texts, 6)
    assert all(len(r.token_ids) == 6 and not r.finished for r in free)
    # make a token the first example writes, but not every other, the end of sequence
    stop = next(int(t) for t in free[0].token_ids if any(t not in other.token_ids for other in free[1:]))
    model.generation_config.eos_token_id = stop
    stopped = generate(model, tokenizer, texts, 6, batch_size=3)
    for before, after in zip(free, stopped):
        written = before.token_ids.tolist()
        end = written.index(stop) + 1 if stop in written else len(written)
        assert after.token_ids.tolist() == written[:end]
        assert after.finished == (stop in written)
        np.testing.assert_allclose(after.probs, before.probs[:end], rtol=0, atol=1e-7)
    assert stopped[0].finished and not all(r.finished for r in stopped)


def test_generation_is_deterministic_in_eval_mode_and_leaves_the_model_as_found():
    model, tokenizer = make_generative_model("gpt2")
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5                                      # train mode would sample a different network
    # transformers installs its own output-capturing hooks on the first such forward; ours must not stay
    model(**tokenizer(["good"], return_tensors="pt"), output_attentions=True, output_hidden_states=True)
    model.train()
    model.transformer.h[0].eval()                               # a mixed state must come back exactly
    modes = [m.training for m in model.modules()]
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    texts = make_texts(3, seed=1)
    first = t3vis.generate(model, tokenizer, texts, 5, masked_heads={1: [0]})
    second = t3vis.generate(model, tokenizer, texts, 5, masked_heads={1: [0]})
    for a, b in zip(first, second):
        assert a.token_ids.tolist() == b.token_ids.tolist()
        np.testing.assert_array_equal(a.probs, b.probs)
    assert [m.training for m in model.modules()] == modes
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()] == hooks
    assert all(p.grad is None for p in model.parameters())


MASKS = {"gpt2": {0: [0, 2], 1: [1]},
         "llama": {0: [3], 1: [0, 1]},
         "t5": {"encoder": {1: [0, 1]}, "cross": {0: [2, 3], 2: [1]}},
         "bart": {"decoder": {0: [0]}, "cross": {1: [1, 3], 2: [0]}}}


@pytest.mark.parametrize("kind", GENERATIVE)
def test_masked_generation_is_a_greedy_loop_under_zero_gates(kind):
    model, tokenizer = language_model(kind)
    texts = make_texts(4, seed=3)
    plain = generate(model, tokenizer, texts, 6, batch_size=3)
    nothing = generate(model, tokenizer, texts, 6, batch_size=3, masked_heads={})
    masked = generate(model, tokenizer, texts, 6, batch_size=3, masked_heads=MASKS[kind])
    for a, b in zip(plain, nothing):
        assert a.token_ids.tolist() == b.token_ids.tolist()
        np.testing.assert_array_equal(a.probs, b.probs)
    stacks = find_stacks(model)
    gates = {s.stack: torch.ones(s.num_layers, s.num_heads, dtype=torch.float64) for s in stacks}
    per_stack = MASKS[kind] if model.config.is_encoder_decoder else {stacks[0].stack: MASKS[kind]}
    for stack, layers in per_stack.items():
        for layer, heads in layers.items():
            gates[stack][layer, heads] = 0.0
    changed = 0.0
    for text, before, after in zip(texts, plain, masked):
        tokens, probs = reference(model, tokenizer, text, 6, gates)
        assert after.token_ids.tolist() == tokens
        np.testing.assert_allclose(after.probs, probs, rtol=0, atol=1e-6)
        steps = min(len(before.probs), len(after.probs))
        changed = max(changed, float(np.abs(before.probs[:steps] - after.probs[:steps]).max()))
    assert changed > 1e-3                                       # masking these heads changes what is written


def test_bad_requests_are_refused():
    model, tokenizer = make_generative_model("t5")
    texts = make_texts(2)
    for steps in (0, -1, MAX_NEW_TOKENS + 1, 2.5, True, None):
        with pytest.raises(InvalidInputError, match="max_new_tokens"):
            generate(model, tokenizer, texts, steps)
    with pytest.raises(InvalidInputError, match="batch_size"):
        generate(model, tokenizer, texts, 3, batch_size=0)
    with pytest.raises(InvalidInputError, match="empty"):
        generate(model, tokenizer, [], 3)
    with pytest.raises(InvalidInputError, match="causal-lm' or 'seq2seq', not 'classification'"):
        generate(model, tokenizer, texts, 3, task="classification")
    with pytest.raises(UnsupportedModelError, match="task='seq2seq'"):
        generate(model, tokenizer, texts, 3, task="causal-lm")
    with pytest.raises(NotFoundError, match="the model has the stacks encoder, decoder, cross"):
        generate(model, tokenizer, texts, 3, masked_heads={"self": {0: [0]}})
    gpt2, gpt2_tokenizer = make_generative_model("gpt2")
    with pytest.raises(InvalidInputError, match="text 1 has no tokens"):
        generate(gpt2, gpt2_tokenizer, ["good", ""], 3)
    classifier, classifier_tokenizer = make_model("bert")
    with pytest.raises(UnsupportedModelError, match="no language-modelling head"):
        generate(classifier, classifier_tokenizer, texts, 3)
