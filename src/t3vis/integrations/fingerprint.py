"""Recognise training examples inside a batch by their tokens and label, on the device, without a sync.

The Hugging Face Trainer drops every column the model does not take, example ids included,
so the callback identifies each row of a training batch by a fingerprint of its non-padding
tokens (independent of padding side) and its label, and looks it up in a sorted table on the
device. A generative row's label is its token labels: the tokens that carry the loss, in
order (a seq2seq target; a completion, which tells where a prompt ends), -100 elsewhere.

Rows that share a fingerprint (the same text with the same label, twice in the training
set) cannot be told apart by what the model sees, so the table hands out their ids in turn:
over any run of k sightings of a fingerprint that k rows share, each of the k ids comes once,
which is once per epoch for each row.
"""

from __future__ import annotations

import functools

import torch

_MAX_POSITIONS = 1 << 16
_IGNORE = -100      # a token label without loss (Hugging Face's ignore index): not part of the fingerprint


@functools.lru_cache(maxsize=8)
def _position_weights(device: torch.device) -> torch.Tensor:
    """One random weight per token position, as many per token-label position, and one more
    (the last) for a class label."""
    generator = torch.Generator().manual_seed(0x7E3)
    weights = torch.randint(1, 2**62, (2 * _MAX_POSITIONS + 1,), generator=generator, dtype=torch.int64)
    return weights.to(device)


def fingerprints(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) token ids [and labels: (B,) classes, or (B, T') token labels with -100 where no loss]
    -> (B,) int64; equal tokens and labels give equal fingerprints, whatever the padding."""
    weights = _position_weights(input_ids.device)
    keys = _sequence_keys(input_ids, attention_mask, weights[:_MAX_POSITIONS])
    if labels is None:
        return keys
    labels = labels.to(device=keys.device, dtype=torch.int64)
    if labels.dim() == 1:
        return keys + (labels + 1) * weights[-1]
    return keys + _sequence_keys(labels, labels != _IGNORE, weights[_MAX_POSITIONS:-1])


def _sequence_keys(tokens: torch.Tensor, kept: torch.Tensor | None, weights: torch.Tensor) -> torch.Tensor:
    """A hash of each row's kept tokens in order, independent of where the others are."""
    mask = torch.ones_like(tokens) if kept is None else kept.to(torch.int64)
    positions = (mask.cumsum(1) - 1).clamp_min(0)          # index among the kept tokens
    # int64 arithmetic wraps around: a hash, deterministic on every device
    return ((tokens.to(torch.int64) + 1) * weights[positions] * mask).sum(1)


class FingerprintTable:
    """Maps fingerprints to example ids with sorted device tensors; unknown rows map to -1.

    A fingerprint that several ids share gives them out in turn (see the module docstring).
    `start` offsets the turns, e.g. by the rank, so that ranks that each see one of two equal
    rows do not both give out the first id.
    """

    def __init__(self, keys: torch.Tensor, ids: torch.Tensor, start: int = 0):
        order = torch.argsort(keys, stable=True)           # equal keys keep their ids' order
        sorted_keys = keys[order]
        self.ids = ids[order]
        self.keys, self.counts = torch.unique_consecutive(sorted_keys, return_counts=True)
        self.offsets = self.counts.cumsum(0) - self.counts  # where each key's ids begin in self.ids
        self.seen = torch.full_like(self.counts, start)     # sightings of each key so far

    def to(self, device) -> FingerprintTable:
        for name in ("keys", "ids", "counts", "offsets", "seen"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def lookup(self, keys: torch.Tensor) -> torch.Tensor:
        if self.keys.numel() == 0:
            return torch.full_like(keys, -1)
        at = torch.searchsorted(self.keys, keys).clamp_max(self.keys.numel() - 1)
        found = self.keys[at] == keys
        # rows of this batch with the same key take consecutive turns
        same = (at.view(-1, 1) == at.view(1, -1)) & found.view(1, -1)
        earlier = same.tril(-1).sum(1)
        turn = (self.seen[at] + earlier) % self.counts[at]
        self.seen.index_add_(0, at, found.to(self.seen.dtype))
        return torch.where(found, self.ids[self.offsets[at] + turn], torch.full_like(keys, -1))
