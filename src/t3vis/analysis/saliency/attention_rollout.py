"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

Per layer l: average the heads' attention, add the identity for the residual connection and
renormalise the rows, A_l = (mean_h attn_l + I) / rowsum. The rollout is the product
R = A_L ... A_2 A_1: row i says how much of token i's final representation flows from each
input token. Every A_l is row-stochastic, so every row of R sums to one. The scores are the
row of the pooled token: the first ([CLS], <s>) for encoders, the last for decoders.

Class-agnostic: the target is recorded (the prediction unless given) but does not change the
scores. Padding is cut away per example before rolling out.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from t3vis.analysis.saliency._common import Encoded, length_batches, model_device, pad, pick_targets
from t3vis.errors import UnsupportedModelError


def rollout(attentions: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Per-layer attention (H, T, T), first layer first -> rollout matrix (T, T), rows summing to one."""
    size = attentions[0].shape[-1]
    eye = torch.eye(size, dtype=torch.float64, device=attentions[0].device)    # (T, T)
    result = eye
    for attn in attentions:
        mixed = attn.double().mean(0) + eye                                    # (T, T): heads averaged, residual
        mixed = mixed / mixed.sum(-1, keepdim=True)                            # rows sum to one
        result = mixed @ result                                                # later layers act last
    return result


def attribute(model: nn.Module, enc: Encoded, targets: np.ndarray | None, *, n_steps: int, batch_size: int
              ) -> list[tuple[np.ndarray, int, None]]:
    device = model_device(model)
    results: list = [None] * len(enc)
    with torch.no_grad():
        for rows in length_batches([len(x) for x in enc.ids], batch_size):
            ids, mask = pad([enc.ids[i] for i in rows], enc.pad_id, device)     # (B, T)
            out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
            if not out.attentions or out.attentions[0] is None:
                raise UnsupportedModelError(f"{type(model).__name__} returned no attention weights; load it with "
                                            'attn_implementation="eager" (other kernels return none)')
            chosen = pick_targets(out.logits, targets, rows)                    # (B,)
            for b, i in enumerate(rows):
                n = len(enc.ids[i])
                matrix = rollout([a[b, :, :n, :n] for a in out.attentions])    # (n, n)
                row = matrix[0] if enc.pooled == "first" else matrix[n - 1]    # (n,)
                results[i] = (row.float().cpu().numpy(), int(chosen[b]), None)
    return results
