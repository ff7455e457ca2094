"""Per-head attention summaries, accumulated batch by batch (and rank by rank) as sums."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from t3vis.store.schema import ATTENTION_SUMMARIES


@dataclass
class AttentionStats:
    """Running sums; `finish()` turns them into means. Sums merge across ranks by addition."""

    num_layers: int
    num_heads: int
    thumbnail_size: int
    sums: dict[str, np.ndarray] = field(default_factory=dict)   # name -> (L, H) float64
    queries: float = 0.0                                          # valid query positions seen
    thumb_sum: np.ndarray = field(init=False)                     # (L, H, K, K) float64
    thumb_count: np.ndarray = field(init=False)                   # (K, K): examples covering each cell

    def __post_init__(self) -> None:
        L, H, K = self.num_layers, self.num_heads, self.thumbnail_size
        for name in ATTENTION_SUMMARIES:
            self.sums.setdefault(name, np.zeros((L, H)))
        self.thumb_sum = np.zeros((L, H, K, K))
        self.thumb_count = np.zeros((K, K))

    @torch.no_grad()
    def add_layer(self, layer: int, attn: torch.Tensor, valid: torch.Tensor, separator: torch.Tensor) -> None:
        """attn (B, H, T, T) rows sum to one over keys; valid (B, T) bool; separator (B, T) bool."""
        attn = attn.detach().float().to(valid.device)      # each block's own device under a device_map
        _B, _H, T, _ = attn.shape
        q_valid = valid[:, None, :].float()                                # (B, 1, T)
        positions = torch.arange(T, device=attn.device, dtype=torch.float32)
        entropy = -(attn * torch.log(attn.clamp_min(1e-12))).sum(-1)        # (B, H, T)
        to_first = attn[..., 0]
        to_sep = (attn * separator[:, None, None, :].float()).sum(-1)
        to_self = attn.diagonal(dim1=-2, dim2=-1)
        to_prev = torch.zeros_like(to_self)
        to_prev[..., 1:] = attn.diagonal(offset=-1, dim1=-2, dim2=-1)
        to_next = torch.zeros_like(to_self)
        to_next[..., :-1] = attn.diagonal(offset=1, dim1=-2, dim2=-1)
        distance = (attn * (positions[:, None] - positions[None, :]).abs()).sum(-1)
        per_query = {"entropy": entropy, "to_first": to_first, "to_separator": to_sep, "to_self": to_self,
                     "to_previous": to_prev, "to_next": to_next, "distance": distance}
        for name, values in per_query.items():
            self.sums[name][layer] += (values * q_valid).sum((0, 2)).double().cpu().numpy()
        K = min(self.thumbnail_size, T)
        pair = (valid[:, :K, None] & valid[:, None, :K]).float()             # (B, K, K)
        self.thumb_sum[layer, :, :K, :K] += (attn[:, :, :K, :K] * pair[:, None]).sum(0).double().cpu().numpy()
        if layer == 0:
            self.queries += float(valid.sum())
            self.thumb_count[:K, :K] += pair.sum(0).double().cpu().numpy()

    def merge(self, other: AttentionStats) -> None:
        for name in ATTENTION_SUMMARIES:
            self.sums[name] += other.sums[name]
        self.queries += other.queries
        self.thumb_sum += other.thumb_sum
        self.thumb_count += other.thumb_count

    def finish(self) -> dict[str, np.ndarray]:
        """Arrays for heads.npz: attention_<name> (L, H), thumbnails (L, H, K, K), thumbnail_counts (K, K)."""
        out = {f"attention_{name}": (s / max(self.queries, 1.0)).astype(np.float32) for name, s in self.sums.items()}
        with np.errstate(invalid="ignore", divide="ignore"):
            thumbs = np.where(self.thumb_count > 0, self.thumb_sum / self.thumb_count, np.nan)
        out["thumbnails"] = thumbs.astype(np.float16)
        out["thumbnail_counts"] = self.thumb_count.astype(np.int64)
        return out
