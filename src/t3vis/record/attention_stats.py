"""Per-head attention summaries, accumulated batch by batch (and rank by rank) as sums.

Self-attention (queries and keys from one stream) gets every summary of
schema.ATTENTION_SUMMARIES. Cross-attention (a decoder's queries over the source) gets those
that do not compare query and key positions (entropy, to_first, to_separator; the others are
NaN, as a query position and a key position there count different tokens) and the coverage of
the source (schema.CROSS_ATTENTION_SUMMARIES): per example, the mean over source tokens of
min(1, the attention they receive summed over target tokens), as in See et al. (2017)'s coverage
loss; 1 when every source token got at least one token's worth of attention.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from t3vis.store.schema import ATTENTION_SUMMARIES, CROSS_ATTENTION_SUMMARIES

_POSITIONAL = ("to_self", "to_previous", "to_next", "distance")


@dataclass
class AttentionStats:
    """Running sums; `finish()` turns them into means. Sums merge across ranks by addition."""

    num_layers: int
    num_heads: int
    thumbnail_size: int
    cross: bool = False                                           # queries and keys from different streams
    sums: dict[str, np.ndarray] = field(default_factory=dict)   # name -> (L, H) float64
    queries: float = 0.0                                          # valid query positions seen
    examples: float = 0.0                                         # examples seen (coverage is per example)
    thumb_sum: np.ndarray = field(init=False)                     # (L, H, K, K) float64
    thumb_count: np.ndarray = field(init=False)                   # (K, K): examples covering each cell

    def __post_init__(self) -> None:
        L, H, K = self.num_layers, self.num_heads, self.thumbnail_size
        for name in self.names:
            self.sums.setdefault(name, np.zeros((L, H)))
        self.thumb_sum = np.zeros((L, H, K, K))
        self.thumb_count = np.zeros((K, K))

    @property
    def names(self) -> tuple[str, ...]:
        return ATTENTION_SUMMARIES + CROSS_ATTENTION_SUMMARIES if self.cross else ATTENTION_SUMMARIES

    @torch.no_grad()
    def add_layer(self, layer: int, attn: torch.Tensor, valid: torch.Tensor, separator: torch.Tensor,
                  key_valid: torch.Tensor | None = None) -> None:
        """attn (B, H, Tq, Tk) rows sum to one over keys; valid (B, Tq) bool queries; separator
        (B, Tk) bool keys; key_valid (B, Tk) bool, the same as valid for self-attention."""
        attn = attn.detach().float().to(valid.device)      # each block's own device under a device_map
        key_valid = valid if key_valid is None else key_valid.to(valid.device)
        _B, _H, Tq, Tk = attn.shape
        q_valid = valid[:, None, :].float()                                # (B, 1, Tq)
        per_query = {
            "entropy": -(attn * torch.log(attn.clamp_min(1e-12))).sum(-1),     # (B, H, Tq)
            "to_first": attn[..., 0],
            "to_separator": (attn * separator.to(valid.device)[:, None, None, :].float()).sum(-1),
        }
        if not self.cross:
            per_query.update(_positional(attn))
        for name, values in per_query.items():
            self.sums[name][layer] += (values * q_valid).sum((0, 2)).double().cpu().numpy()
        if self.cross:
            received = (attn * q_valid[..., None]).sum(2).clamp(max=1.0)       # (B, H, Tk)
            k_valid = key_valid[:, None, :].float()
            per_example = (received * k_valid).sum(-1) / k_valid.sum(-1).clamp_min(1)   # (B, H)
            self.sums["coverage"][layer] += per_example.sum(0).double().cpu().numpy()
        K = self.thumbnail_size
        kq, kk = min(K, Tq), min(K, Tk)
        pair = (valid[:, :kq, None] & key_valid[:, None, :kk]).float()       # (B, kq, kk)
        self.thumb_sum[layer, :, :kq, :kk] += (attn[:, :, :kq, :kk] * pair[:, None]).sum(0).double().cpu().numpy()
        if layer == 0:
            self.queries += float(valid.sum())
            self.examples += float(valid.shape[0])
            self.thumb_count[:kq, :kk] += pair.sum(0).double().cpu().numpy()

    def merge(self, other: AttentionStats) -> None:
        for name in self.names:
            self.sums[name] += other.sums[name]
        self.queries += other.queries
        self.examples += other.examples
        self.thumb_sum += other.thumb_sum
        self.thumb_count += other.thumb_count

    def finish(self) -> dict[str, np.ndarray]:
        """Arrays for heads.npz: attention_<name> (L, H), thumbnails (L, H, K, K), thumbnail_counts (K, K)."""
        out = {}
        for name, s in self.sums.items():
            if self.cross and name in _POSITIONAL:
                out[f"attention_{name}"] = np.full(s.shape, np.nan, np.float32)
                continue
            count = self.examples if name in CROSS_ATTENTION_SUMMARIES else self.queries
            out[f"attention_{name}"] = (s / max(count, 1.0)).astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            thumbs = np.where(self.thumb_count > 0, self.thumb_sum / self.thumb_count, np.nan)
        out["thumbnails"] = thumbs.astype(np.float16)
        out["thumbnail_counts"] = self.thumb_count.astype(np.int64)
        return out


def _positional(attn: torch.Tensor) -> dict[str, torch.Tensor]:
    """Summaries that compare a query's position with its keys' (self-attention only)."""
    T = attn.shape[-1]
    positions = torch.arange(T, device=attn.device, dtype=torch.float32)
    to_self = attn.diagonal(dim1=-2, dim2=-1)
    to_prev = torch.zeros_like(to_self)
    to_prev[..., 1:] = attn.diagonal(offset=-1, dim1=-2, dim2=-1)
    to_next = torch.zeros_like(to_self)
    to_next[..., :-1] = attn.diagonal(offset=1, dim1=-2, dim2=-1)
    distance = (attn * (positions[:, None] - positions[None, :]).abs()).sum(-1)
    return {"to_self": to_self, "to_previous": to_prev, "to_next": to_next, "distance": distance}
