"""Plumbing of token attribution for generative tasks: examples as target-token units, and the taps.

An example is encoded by its task (`task.examples`, `task.encode`), so the target tokens are
exactly those the task scores (labels != -100, aligned with `task.aligned`). It has one token
stream (a decoder-only model's input_ids) or two (an encoder-decoder's source, then its decoder
inputs); the last stream's outputs are the logits.

A **unit** is one (example, target token) pair: the example's streams with the last one cut
just after the position whose output predicts that token. Causal attention makes the cut
exact (nothing after that position can reach it), so a unit's scores beyond it are zero by
construction, and a batch of units costs what the asked tokens cost: asking one token runs one
unit. Units of many examples and target tokens are sorted by length and batched together.

Two hooks do the rest, both removed in `finally`:
- `StreamTap` on the word-embedding module of each stream (`model.get_input_embeddings()`, or
  an encoder-decoder's encoder and decoder embeddings; one module serving both streams is
  called once per stream, in order, and each call is told apart by its order): it captures
  each stream's embeddings as a leaf, or replaces them (integrated gradients' path points);
- `HeadPick` on the output embeddings (the language-modelling head): a pre-hook that keeps only
  each row's predicting position, so the vocabulary projection runs once per row, not per token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from t3vis.analysis.saliency._common import input_embeddings, pad, to_device
from t3vis.errors import InvalidInputError, UnsupportedModelError
from t3vis.models.structure import DECODER_INPUT, INPUT
from t3vis.tasks.generative import IGNORE, pad_id

# the model inputs of each stream, streams in the order their scores are listed (source first)
STREAM_INPUTS = {INPUT: ("input_ids", "attention_mask"), DECODER_INPUT: ("decoder_input_ids", "decoder_attention_mask")}
ENCODE_CHUNK = 256


@dataclass(frozen=True)
class SequenceExample:
    ids: list[np.ndarray]        # per stream (T_s,) int64
    special: list[np.ndarray]    # per stream (T_s,) bool: kept in the integrated-gradients baseline
    targets: np.ndarray          # (n_target,) int64: the target token ids the task scores
    positions: np.ndarray        # (n_target,) int64: the last stream's position whose output predicts each


@dataclass(frozen=True)
class SequenceEncoded:
    streams: list[str]
    examples: list[SequenceExample]
    pad_id: int


@dataclass(frozen=True)
class Units:
    """(example, target token) pairs, flat arrays of one entry per unit."""

    example: np.ndarray          # (U,) example index
    target: np.ndarray           # (U,) index into the example's target tokens
    label: np.ndarray            # (U,) target token id
    foil: np.ndarray             # (U,) foil token id, -1 for none
    position: np.ndarray         # (U,) predicting position in the last stream

    def __len__(self) -> int:
        return len(self.example)


def encode_sequences(model: nn.Module, tokenizer, task, texts, targets, max_length: int) -> SequenceEncoded:
    """The task's own encoding of the examples, unpadded, with each target token's predicting position."""
    examples = task.examples(model, texts, targets, what="texts to explain")
    special_ids = np.asarray(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
    out: list[SequenceExample] = []
    streams: list[str] = []
    for start in range(0, len(examples), ENCODE_CHUNK):
        rows = np.arange(start, min(start + ENCODE_CHUNK, len(examples)))
        batch = task.encode(model, tokenizer, examples, rows, max_length=max_length, device=torch.device("cpu"))
        streams = [name for name in STREAM_INPUTS if name in batch.streams]
        last = batch.streams[streams[-1]].ids                                        # (B, T)
        index = torch.arange(last.shape[1]).expand(last.shape[0], -1)[..., None]      # (B, T, 1): logits' places
        where, labels = task.aligned(index, batch.labels)                            # (B, T', 1), (B, T')
        for b in range(len(rows)):
            scored = labels[b] != IGNORE
            ids = [batch.streams[s].ids[b][batch.streams[s].valid[b]].numpy().astype(np.int64) for s in streams]
            out.append(SequenceExample(ids, [np.isin(x, special_ids) for x in ids],
                                       labels[b][scored].numpy().astype(np.int64),
                                       where[b, :, 0][scored].numpy().astype(np.int64)))
    return SequenceEncoded(streams, out, pad_id(tokenizer))


def unit_length(enc: SequenceEncoded, example: int, position: int) -> int:
    ids = enc.examples[example].ids
    return sum(len(x) for x in ids[:-1]) + position + 1


def unit_ids(enc: SequenceEncoded, units: Units, members: np.ndarray, device, baseline: bool = False
             ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per stream (ids (U, T_s), attention mask (U, T_s)) of the units `members`, right-padded.

    baseline: every token but the special ones replaced by the pad token.
    """
    per_stream = []
    last = len(enc.streams) - 1
    for s in range(len(enc.streams)):
        rows = []
        for u in members:
            example = enc.examples[units.example[u]]
            ids = np.where(example.special[s], example.ids[s], enc.pad_id) if baseline else example.ids[s]
            rows.append(ids[:units.position[u] + 1] if s == last else ids)
        per_stream.append(pad(rows, enc.pad_id, device))
    return per_stream


def model_inputs(enc: SequenceEncoded, per_stream: list[tuple[torch.Tensor, torch.Tensor]],
                 rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """model(**inputs) from unit_ids' output, optionally repeating its rows (one per path step)."""
    inputs = {}
    for name, (ids, mask) in zip(enc.streams, per_stream):
        ids_key, mask_key = STREAM_INPUTS[name]
        inputs[ids_key], inputs[mask_key] = (ids, mask) if rows is None else (ids[rows], mask[rows])
    return inputs


def stream_modules(model: nn.Module, n_streams: int) -> list[nn.Module]:
    """The word-embedding module that embeds each stream."""
    if n_streams == 1:
        return [input_embeddings(model)]
    parts = []
    for getter in ("get_encoder", "get_decoder"):
        get = getattr(model, getter, None)
        if not callable(get):
            raise UnsupportedModelError(f"{type(model).__name__} has no {getter}(); attribution over a source and a "
                                        "target needs an encoder-decoder with both")
        parts.append(input_embeddings(get()))
    return parts


class StreamTap:
    """Forward hooks on each stream's word-embedding module: capture each output as a leaf, or replace it."""

    def __init__(self, modules: list[nn.Module]):
        self.modules = modules
        self.replacement: list[torch.Tensor] | None = None
        self.capture = False
        self.captured: list[torch.Tensor | None] = [None] * len(modules)
        self._served: dict[int, list[int]] = {}            # module id: the streams it embeds, in call order
        for s, module in enumerate(modules):
            self._served.setdefault(id(module), []).append(s)
        self._calls: dict[int, int] = {}
        self._passing = False

    def __call__(self, module, args, output):
        if self._passing:
            return None
        served, calls = self._served[id(module)], self._calls.get(id(module), 0)
        if calls >= len(served):
            raise UnsupportedModelError(f"{type(module).__name__} embedded more token streams than the model has; "
                                        "generative attribution expects one call per stream and forward")
        self._calls[id(module)] = calls + 1
        s = served[calls]
        if self.replacement is not None:
            if self.replacement[s].shape != output.shape:
                raise RuntimeError(f"embedding replacement {tuple(self.replacement[s].shape)} does not match "
                                   f"the layer's output {tuple(output.shape)}")
            return self.replacement[s]
        if self.capture:
            self.captured[s] = output.detach().requires_grad_(True)      # (B, T_s, E), a leaf
            return self.captured[s]
        return None

    def run(self, model: nn.Module, inputs: dict[str, torch.Tensor], **kwargs):
        """One forward, checking that every stream went through its embedding module once."""
        self._calls = {}
        out = model(**inputs, **kwargs)
        if any(self._calls.get(key, 0) != len(served) for key, served in self._served.items()):
            raise UnsupportedModelError(f"{type(model).__name__} did not call its word embeddings once per token "
                                        "stream; attribution at the embeddings cannot see its inputs")
        return out

    def leaves(self) -> list[torch.Tensor]:
        if any(x is None for x in self.captured):
            raise RuntimeError("the embedding tap captured nothing: set capture and run a forward first")
        return [x for x in self.captured if x is not None]

    @torch.no_grad()
    def embed(self, stream: int, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, E) word embeddings of that stream, untouched by the tap."""
        self._passing = True
        try:
            return self.modules[stream](ids)
        finally:
            self._passing = False


class HeadPick:
    """Pre-hook on the language-modelling head: row r keeps only position positions[r] (logits (R, 1, V))."""

    def __init__(self):
        self.positions: torch.Tensor | None = None

    def __call__(self, module, args):
        if self.positions is None:
            return None
        hidden = args[0]
        if hidden.dim() != 3 or hidden.shape[0] != len(self.positions):
            raise UnsupportedModelError(f"the language-modelling head got {tuple(hidden.shape)}, not (rows, tokens, "
                                        "hidden); generative attribution cannot pick the predicting position")
        picked = hidden[torch.arange(len(self.positions), device=hidden.device), self.positions]   # (R, E)
        return (picked[:, None], *args[1:])


@contextmanager
def sequence_taps(model: nn.Module, n_streams: int) -> Iterator[tuple[StreamTap, HeadPick]]:
    tap, head = StreamTap(stream_modules(model, n_streams)), HeadPick()
    get_head = getattr(model, "get_output_embeddings", None)
    lm_head = get_head() if callable(get_head) else None
    if not isinstance(lm_head, nn.Module):
        raise UnsupportedModelError(f"{type(model).__name__} has no language-modelling head "
                                    "(get_output_embeddings()); load it with AutoModelForCausalLM or "
                                    "AutoModelForSeq2SeqLM")
    with ExitStack() as stack:
        for module in {id(m): m for m in tap.modules}.values():
            stack.callback(module.register_forward_hook(tap).remove)
        stack.callback(lm_head.register_forward_pre_hook(head).remove)
        yield tap, head


def picked_logits(model: nn.Module, tap: StreamTap, head: HeadPick, inputs: dict[str, torch.Tensor],
                  positions: np.ndarray) -> torch.Tensor:
    """(R, V) logits of each row at its predicting position, at least float32."""
    device = next(iter(inputs.values())).device
    head.positions = to_device(positions, device)
    try:
        logits = tap.run(model, inputs).logits                                       # (R, 1, V)
    finally:
        head.positions = None
    return logits[:, 0].to(torch.promote_types(logits.dtype, torch.float32))


def target_function(z: torch.Tensor, label: torch.Tensor, foil: torch.Tensor) -> torch.Tensor:
    """(R,) log p(label), or log p(label) - log p(foil) where foil >= 0, from logits (R, V)."""
    log_probs = z.log_softmax(-1)
    value = log_probs.gather(1, label[:, None])[:, 0]
    against = log_probs.gather(1, foil.clamp(min=0)[:, None])[:, 0]
    return value - torch.where(foil >= 0, against, torch.zeros_like(against))


def check_tokens(token, n_targets: list[int]) -> list[np.ndarray]:
    """Per example the asked target-token indices (all of them for None)."""
    if token is None:
        return [np.arange(n) for n in n_targets]
    values = [token] if isinstance(token, (int, np.integer)) else list(token)
    if not values:
        raise InvalidInputError("token=[] asks for no target token; give an index, a list of indices, or None")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InvalidInputError(f"token {v!r} is not an index into the target tokens; give an int")
    asked = []
    for i, n in enumerate(n_targets):
        bad = [v for v in values if not -n <= v < n]
        if bad:
            raise InvalidInputError(f"token index {bad[0]} is out of range: example {i} has {n} target tokens "
                                    f"(0..{n - 1}, or negative from the end)")
        asked.append(np.asarray([v % n for v in values], dtype=np.int64))
    return asked


def check_foils(foil, tokenizer, n_asked: int, vocab: int) -> np.ndarray:
    """(n_asked,) foil token ids, -1 for none; a string is a token of the tokenizer's vocabulary."""
    if foil is None:
        return np.full(n_asked, -1, dtype=np.int64)
    values = [foil] if isinstance(foil, (str, int, np.integer)) else list(foil)
    if len(values) == 1:
        values = values * n_asked
    if len(values) != n_asked:
        raise InvalidInputError(f"{len(values)} foils for {n_asked} asked target tokens: give one foil, or one per "
                                "asked token (see token=)")
    known = tokenizer.get_vocab()
    ids = []
    for v in values:
        if isinstance(v, str):
            if v not in known:
                raise InvalidInputError(f"foil {v!r} is not a token of the tokenizer's vocabulary; give a token as "
                                        "the tokenizer writes it (tokenizer.tokenize(word)) or a token id")
            v = known[v]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < vocab:
            raise InvalidInputError(f"foil {v!r} is not a token id of the model's vocabulary (0..{vocab - 1})")
        ids.append(int(v))
    return np.asarray(ids, dtype=np.int64)
