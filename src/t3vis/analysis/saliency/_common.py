"""Shared plumbing of the saliency methods: tokenisation, batching, access to the word embeddings.

Every method attributes to the output of the word-embedding module
(`model.get_input_embeddings()`), as Captum's `LayerIntegratedGradients` on that layer does:
a forward hook either captures that output as a fresh leaf (so gradients stop there and no
parameter is reached) or replaces it with given values (integrated gradients' path points).
The hook lives in a context manager and comes off in `finally`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from t3vis.errors import InvalidInputError


@dataclass(frozen=True)
class Encoded:
    """The texts as token ids, unpadded, one array per example."""

    ids: list[np.ndarray]        # per example (T_i,) int64
    special: list[np.ndarray]    # per example (T_i,) bool: [CLS], [SEP], <s>, ... (kept in baselines)
    tokens: list[list[str]]      # per example T_i token strings
    pad_id: int
    pooled: str                  # "first" (encoders pool a leading [CLS]) or "last" (decoders)

    def __len__(self) -> int:
        return len(self.ids)

    def baseline_ids(self, i: int) -> np.ndarray:
        """(T_i,): every token replaced by the pad token, special tokens kept."""
        return np.where(self.special[i], self.ids[i], self.pad_id)

    def subset(self, rows: Sequence[int] | np.ndarray) -> Encoded:
        """The given examples only, in that order."""
        return Encoded([self.ids[i] for i in rows], [self.special[i] for i in rows],
                       [self.tokens[i] for i in rows], self.pad_id, self.pooled)


def encode(tokenizer, texts: Sequence[str], max_length: int) -> Encoded:
    if tokenizer.pad_token_id is None:
        raise InvalidInputError("the tokenizer has no pad token; set one (for GPT-2 style models "
                                "`tokenizer.pad_token = tokenizer.eos_token`) "
                                "or load with t3vis.models.load_classifier")
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, return_special_tokens_mask=True)
    ids = [np.asarray(x, dtype=np.int64) for x in enc["input_ids"]]
    empty = [i for i, x in enumerate(ids) if len(x) == 0]
    if empty:
        raise InvalidInputError(f"text {empty[0]} tokenises to no tokens; remove empty texts before explaining")
    special = [np.asarray(x, dtype=bool) for x in enc["special_tokens_mask"]]
    tokens = [tokenizer.convert_ids_to_tokens(x.tolist()) for x in ids]
    pooled = "first" if getattr(tokenizer, "cls_token", None) is not None else "last"
    return Encoded(ids, special, tokens, int(tokenizer.pad_token_id), pooled)


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Example indices sorted by length and cut into batches: dynamic padding wastes little."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def to_device(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """A host array on the model's device (sharing memory on a CPU).

    To a GPU it goes through pinned memory, asynchronously: a copy from pageable memory would
    make the host wait for every kernel already queued, so the next batch's Python (the model's
    forward, the autograd graph) could not overlap the GPU's work on this one.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if torch.device(device).type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def pad(rows: Sequence[np.ndarray], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id arrays: (ids (B, T), attention_mask (B, T))."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return to_device(ids, device), to_device(mask, device)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def logits_of(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, **kwargs) -> torch.Tensor:
    """(B, C) float logits of a plain forward (the tap decides what the word embeddings are)."""
    return model(input_ids=ids, attention_mask=mask, **kwargs).logits


def pick_targets(logits: torch.Tensor, given: np.ndarray | None, rows: np.ndarray) -> torch.Tensor:
    """(B,) target class per row: the given ones, or the model's prediction."""
    if given is None:
        return logits.detach().argmax(-1)
    return to_device(given[rows], logits.device)


class EmbeddingTap:
    """Forward hook on the word-embedding module: capture its output as a leaf, or replace it."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.replacement: torch.Tensor | None = None
        self.captured: torch.Tensor | None = None
        self.capture = False

    def __call__(self, module, args, output):
        if self.replacement is not None:
            if self.replacement.shape != output.shape:
                raise RuntimeError(f"embedding replacement {tuple(self.replacement.shape)} does not match "
                                   f"the layer's output {tuple(output.shape)}")
            return self.replacement
        if self.capture:
            self.captured = output.detach().requires_grad_(True)   # (B, T, E), a leaf
            return self.captured
        return None

    def leaf(self) -> torch.Tensor:
        """The word embeddings the last forward captured, (B, T, E), a leaf that gradients stop at."""
        if self.captured is None:
            raise RuntimeError("the embedding tap captured nothing: set capture and run a forward first")
        return self.captured

    @torch.no_grad()
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, E) word embeddings, the tap passing them through untouched."""
        saved = self.replacement, self.capture
        self.replacement, self.capture = None, False
        try:
            return self.module(ids)
        finally:
            self.replacement, self.capture = saved


def input_embeddings(model: nn.Module) -> nn.Module:
    """The word-embedding module, `model.get_input_embeddings()` of a transformers model."""
    getter = getattr(model, "get_input_embeddings", None)
    module = getter() if callable(getter) else None
    if not isinstance(module, nn.Module):
        raise InvalidInputError(f"{type(model).__name__}.get_input_embeddings() gave no module; saliency needs "
                                "the word-embedding module")
    return module


@contextmanager
def embedding_tap(model: nn.Module) -> Iterator[EmbeddingTap]:
    tap = EmbeddingTap(input_embeddings(model))
    module = tap.module
    handle = module.register_forward_hook(tap)
    try:
        yield tap
    finally:
        handle.remove()


def embedding_gradients(model: nn.Module, enc: Encoded, targets: np.ndarray | None, batch_size: int
                        ) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """Per example (word embeddings (T_i, E), d target logit / d embeddings (T_i, E), target)."""
    device = model_device(model)
    out: list = [None] * len(enc)
    with embedding_tap(model) as tap:
        tap.capture = True
        for rows in length_batches([len(x) for x in enc.ids], batch_size):
            ids, mask = pad([enc.ids[i] for i in rows], enc.pad_id, device)   # (B, T)
            logits = logits_of(model, ids, mask)                                # (B, C)
            chosen = pick_targets(logits, targets, rows)                        # (B,)
            selected = logits.gather(1, chosen[:, None])                        # (B, 1)
            grads, = torch.autograd.grad(selected.sum(), tap.leaf())            # (B, T, E)
            emb = tap.leaf().detach()                                           # (B, T, E)
            for b, i in enumerate(rows):
                n = len(enc.ids[i])
                out[i] = (emb[b, :n], grads[b, :n], int(chosen[b]))
    return out
