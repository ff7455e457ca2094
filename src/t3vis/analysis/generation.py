"""Greedy generation: what a language model writes after a prompt (causal-lm) or for a source (seq2seq).

Greedy means the most likely next token at every step, the argmax of the model's logits, and
nothing else: no sampling, no beams, none of the logits processors a checkpoint's
`generation_config` may ask for (repetition penalties, forced tokens). So the result is a
property of the model alone, the same on every call, and each token's probability is the
softmax of the model's own logits at that step. `model.generate` always merges the model's
generation_config into the one it is given, so this is a loop of its own.

Each step runs the model on the whole sequence so far, without a key/value cache: the same
forward pass as every other analysis (so masked heads are gated exactly as in `evaluate`),
the same in every transformers version, and as many forward passes as a cached loop, each
longer. It is meant for looking at a few examples, not for serving. Batches are padded on
the right, as the tasks pad them, and each row's next token is read at its own last real
position; rows stop at the end-of-sequence token and leave the batch. Padding on the left,
which a cached loop needs so that every row's next token is at the same position, would
need position ids counted over the real tokens; reading each row where it ends does not.
Either way no row sees another's padding, so the result does not depend on the batch size.
An encoder-decoder's encoder runs once per batch, in the first step's forward pass; its
states are fed to every later step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from t3vis.analysis.heads import validate_stack_masks
from t3vis.errors import InvalidInputError
from t3vis.models.batches import unwrap
from t3vis.models.gates import masked_stacks
from t3vis.models.structure import AttentionLayout, eval_mode, find_stacks, is_encoder_decoder
from t3vis.tasks import get_task
from t3vis.tasks.base import Task, check_texts
from t3vis.tasks.generative import GenerativeTask, at_least_float32, pad_id, right_pad, valid_mask
from t3vis.tasks.seq2seq import decoder_start

MAX_NEW_TOKENS = 512     # one forward pass per token: a bound on what one call can cost


@dataclass(frozen=True, eq=False)
class Generation:
    """What the model wrote for one text; arrays are read-only."""

    prompt: str              # the text given: a causal-lm prompt or a seq2seq source
    token_ids: np.ndarray    # (k,) int64 the generated tokens, the end-of-sequence token included if reached
    tokens: list[str]        # each generated token as the tokenizer writes it
    text: str                # the generated tokens decoded, special tokens left out
    probs: np.ndarray        # (k,) float32 the probability the model gave each token when it chose it
    finished: bool           # stopped at the end-of-sequence token (False: ran out of max_new_tokens)


def generate(model: nn.Module, tokenizer, texts: Sequence[str], max_new_tokens: int = 20, *,
             task: str | Task | None = None, masked_heads: Mapping | None = None, batch_size: int = 8,
             max_length: int = 512) -> list[Generation]:
    """Greedy continuation of every text, in the order of texts; the model is left as found.

    task: "causal-lm" (each text is a prompt) or "seq2seq" (each text is a source); None
    takes the one the model can do. masked_heads gates heads to zero while generating, as in
    t3vis.analysis.heads.evaluate: {layer: heads}, or {stack: {layer: heads}} for an
    encoder-decoder. A prompt longer than max_length tokens keeps its end (the words nearest
    the continuation), a source its beginning, as the tasks truncate them.
    """
    model = unwrap(model)
    _check_task(model, task)
    texts = check_texts(texts, "set of texts to continue")
    steps = _check_counts(max_new_tokens, batch_size, max_length)
    masks: dict[str, dict[int, tuple[int, ...]]] = {}
    layouts: tuple[AttentionLayout, ...] = ()
    if masked_heads is not None:
        layouts = find_stacks(model)
        masks = validate_stack_masks(layouts, masked_heads)
    encoder_decoder = is_encoder_decoder(model)
    prompts = _encode(tokenizer, texts, max_length, keep_end=not encoder_decoder)
    stop = _end_of_sequence_ids(model, tokenizer)
    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    greedy = _greedy_encoder_decoder if encoder_decoder else _greedy_decoder_only
    decoded: dict[int, tuple[list[int], list[float]]] = {}
    order = np.argsort([len(p) for p in prompts], kind="stable")     # rows of a batch pad little
    with eval_mode(model), torch.no_grad(), masked_stacks(layouts, masks, device):
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            outs = greedy(model, [prompts[i] for i in rows], steps, stop, pad, device)
            decoded.update(zip(rows.tolist(), outs))
    return [_generation(tokenizer, text, decoded[i], stop) for i, text in enumerate(texts)]


def _check_task(model: nn.Module, task: str | Task | None) -> None:
    """A generative task the model can do; None: the one its family does."""
    if task is None:
        task = "seq2seq" if is_encoder_decoder(model) else "causal-lm"
    resolved = get_task(task)
    if not isinstance(resolved, GenerativeTask):
        raise InvalidInputError(f"generate continues texts with a language model: give task='causal-lm' or "
                                f"'seq2seq', not {resolved.name!r}")
    resolved.check_model(model)


def _check_counts(max_new_tokens: int, batch_size: int, max_length: int) -> int:
    for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InvalidInputError(f"{name} must be a whole number of at least 1, not {value!r}")
    if max_new_tokens > MAX_NEW_TOKENS:
        raise InvalidInputError(f"max_new_tokens={max_new_tokens} is more than {MAX_NEW_TOKENS}: each token is one "
                                "forward pass over the whole sequence; generate at most that many")
    return int(max_new_tokens)


def _encode(tokenizer, texts: list[str], max_length: int, *, keep_end: bool) -> list[list[int]]:
    """Token ids per text, with the tokenizer's special tokens, as the tasks encode a prompt or a source."""
    encoded = [list(ids) for ids in tokenizer(texts)["input_ids"]]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise InvalidInputError(f"text {empty[0]} has no tokens to continue; give it at least one word")
    return [ids[-max_length:] if keep_end else ids[:max_length] for ids in encoded]


def _end_of_sequence_ids(model: nn.Module, tokenizer) -> set[int]:
    """The tokens that end a generation: the model's generation config's (one or several), else the tokenizer's."""
    config = getattr(model, "generation_config", None)
    ids = getattr(config, "eos_token_id", None)
    if ids is None:
        ids = getattr(model.config, "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return set()
    return {int(i) for i in ids} if isinstance(ids, (list, tuple)) else {int(ids)}


def _pick(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, V) next-token logits -> the most likely token per row and its probability."""
    token = logits.argmax(-1)
    prob = at_least_float32(logits).softmax(-1).gather(1, token[:, None]).squeeze(1)
    return token, prob


def _greedy_decoder_only(model: nn.Module, prompts: list[list[int]], steps: int, stop: set[int], pad: int,
                         device: torch.device) -> list[tuple[list[int], list[float]]]:
    sequences = [list(p) for p in prompts]
    generated: list[tuple[list[int], list[float]]] = [([], []) for _ in prompts]
    active = list(range(len(prompts)))
    for _ in range(steps):
        rows = [sequences[i] for i in active]
        ids = right_pad(rows, pad, device)
        logits = model(input_ids=ids, attention_mask=valid_mask(rows, device).long()).logits
        last = torch.as_tensor([len(r) - 1 for r in rows], device=logits.device)
        token, prob = _pick(logits[torch.arange(len(rows), device=logits.device), last])
        active = _advance(active, token, prob, sequences, generated, stop)
        if not active:
            break
    return generated


def _greedy_encoder_decoder(model: nn.Module, sources: list[list[int]], steps: int, stop: set[int], pad: int,
                            device: torch.device) -> list[tuple[list[int], list[float]]]:
    from transformers.modeling_outputs import BaseModelOutput

    start = decoder_start(model)
    if start is None:
        raise InvalidInputError(f"{type(model).__name__}'s config has no decoder_start_token_id: set it")
    source_ids = right_pad(sources, pad, device)
    source_mask = valid_mask(sources, device).long()
    sequences = [[start] for _ in sources]                 # every decoder row is as long as the others
    generated: list[tuple[list[int], list[float]]] = [([], []) for _ in sources]
    active = list(range(len(sources)))
    encoded: torch.Tensor | None = None
    for _ in range(steps):
        picked = torch.as_tensor(active, device=device)
        decoder_ids = torch.as_tensor([sequences[i] for i in active], device=device)
        if encoded is None:
            out = model(input_ids=source_ids, attention_mask=source_mask, decoder_input_ids=decoder_ids)
            encoded = out.encoder_last_hidden_state
        else:
            out = model(encoder_outputs=BaseModelOutput(last_hidden_state=encoded[picked.to(encoded.device)]),
                        attention_mask=source_mask[picked], decoder_input_ids=decoder_ids)
        token, prob = _pick(out.logits[:, -1])
        active = _advance(active, token, prob, sequences, generated, stop)
        if not active:
            break
    return generated


def _advance(active: list[int], token: torch.Tensor, prob: torch.Tensor, sequences: list[list[int]],
             generated: list[tuple[list[int], list[float]]], stop: set[int]) -> list[int]:
    """Append each active row's token; the rows that have not ended stay active."""
    still = []
    for row, t, p in zip(active, token.tolist(), prob.tolist()):
        sequences[row].append(t)
        generated[row][0].append(t)
        generated[row][1].append(p)
        if t not in stop:
            still.append(row)
    return still


def _generation(tokenizer, text: str, out: tuple[list[int], list[float]], stop: set[int]) -> Generation:
    ids, probs = out
    token_ids = np.asarray(ids, np.int64)
    prob_array = np.asarray(probs, np.float32)
    token_ids.setflags(write=False)
    prob_array.setflags(write=False)
    return Generation(prompt=text, token_ids=token_ids, tokens=list(tokenizer.convert_ids_to_tokens(ids)),
                      text=tokenizer.decode(ids, skip_special_tokens=True), probs=prob_array,
                      finished=bool(ids) and ids[-1] in stop)
