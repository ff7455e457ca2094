"""Recognise training examples inside a batch by their tokens, on the device, without a sync.

The Hugging Face Trainer drops every column the model does not take, example ids included,
so the callback identifies each row of a training batch by a fingerprint of its non-padding
tokens (independent of padding side) and looks it up in a sorted table on the device.
"""

from __future__ import annotations

import functools

import torch

_MAX_POSITIONS = 1 << 16


@functools.lru_cache(maxsize=8)
def _position_weights(device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0x7E3)
    weights = torch.randint(1, 2**62, (_MAX_POSITIONS,), generator=generator, dtype=torch.int64)
    return weights.to(device)


def fingerprints(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) token ids -> (B,) int64; equal token sequences give equal fingerprints."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    mask = attention_mask.to(torch.int64)
    positions = (mask.cumsum(1) - 1).clamp_min(0)          # index among the real tokens
    weights = _position_weights(input_ids.device)[positions]
    # int64 arithmetic wraps around: a hash, deterministic on every device
    return ((input_ids.to(torch.int64) + 1) * weights * mask).sum(1)


class FingerprintTable:
    """Maps fingerprints to example ids with a sorted device tensor; unknown rows map to -1."""

    def __init__(self, keys: torch.Tensor, ids: torch.Tensor):
        order = torch.argsort(keys)
        self.keys, self.ids = keys[order], ids[order]

    def to(self, device) -> FingerprintTable:
        self.keys, self.ids = self.keys.to(device), self.ids.to(device)
        return self

    def lookup(self, keys: torch.Tensor) -> torch.Tensor:
        if self.keys.numel() == 0:
            return torch.full_like(keys, -1)
        at = torch.searchsorted(self.keys, keys).clamp_max(self.keys.numel() - 1)
        return torch.where(self.keys[at] == keys, self.ids[at], torch.full_like(keys, -1))
