"""Integrated gradients (Sundararajan et al. 2017) at the word embeddings.

    IG_t = sum_d (e_td - b_td) * integral_0^1 d f(b + a (e - b)) / d e_td  da

f is the target logit; e the word embeddings of the text; b those of the baseline, the same
ids with every token replaced by the pad token and the special tokens ([CLS], [SEP], <s>, ...)
kept. As in Captum's `LayerIntegratedGradients` on the embedding layer, only the word-embedding
output is interpolated: the model still sees the text's ids everywhere else (positions, token
types, the decoder's pooled position).

The integral is taken by Gauss-Legendre quadrature on [0, 1] with `n_steps` nodes (Captum's
default, "gausslegendre"): for these smooth paths it is far more accurate than a Riemann sum
at the same cost.

Batching: the (example, step) pairs of all examples, examples sorted by length, are cut into
batches of `batch_size` rows, each padded only to its own longest example; one forward and one
`torch.autograd.grad` per batch, whatever the number of examples or steps in it.

Completeness delta, returned per example, relative:

    delta = |sum_t IG_t - (f(e) - f(b))| / |f(e) - f(b)|

with f(e) and f(b) the path's end points (the same forward the path uses, at a = 1 and a = 0).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from t3vis.analysis.saliency._common import (EmbeddingTap, Encoded, embedding_tap, length_batches, logits_of,
                                              model_device, pad, pick_targets)


def gauss_legendre(n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas (n,), weights (n,)) on [0, 1]; the weights sum to one."""
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    return 0.5 * (nodes + 1.0), 0.5 * weights


def _end_points(model: nn.Module, tap: EmbeddingTap, enc: Encoded, targets: np.ndarray | None, batch_size: int):
    """Per example: e - b (T_i, E), target, f(e) - f(b), from one no-grad pass over both end points."""
    device = model_device(model)
    diffs, chosen_all, gaps = [None] * len(enc), np.zeros(len(enc), np.int64), np.zeros(len(enc))
    for rows in length_batches([len(x) for x in enc.ids], max(1, batch_size // 2)):
        ids, mask = pad([enc.ids[i] for i in rows], enc.pad_id, device)             # (B, T)
        base, _ = pad([enc.baseline_ids(i) for i in rows], enc.pad_id, device)      # (B, T)
        e_x, e_b = tap.embed(ids), tap.embed(base)                                  # (B, T, E) each
        tap.replacement = torch.cat([e_x, e_b])                                     # (2B, T, E)
        # full precision even under a bfloat16 autocast: the completeness delta is measured against these
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            logits = logits_of(model, torch.cat([ids, ids]), torch.cat([mask, mask])).double()  # (2B, C)
        tap.replacement = None
        f_x, f_b = logits[:len(rows)], logits[len(rows):]                           # (B, C) each
        chosen = pick_targets(f_x, targets, rows)                                   # (B,)
        gap = (f_x - f_b).gather(1, chosen[:, None])[:, 0]                          # (B,)
        for b, i in enumerate(rows):
            n = len(enc.ids[i])
            diffs[i] = (e_x[b, :n] - e_b[b, :n])
            chosen_all[i], gaps[i] = int(chosen[b]), float(gap[b])
    return diffs, chosen_all, gaps


def _path_gradients(model: nn.Module, tap: EmbeddingTap, enc: Encoded, targets: np.ndarray, n_steps: int,
                    batch_size: int) -> list[torch.Tensor]:
    """Per example the quadrature-weighted sum of the path gradients, (T_i, E)."""
    device = model_device(model)
    alphas, weights = gauss_legendre(n_steps)
    order = np.argsort([len(x) for x in enc.ids], kind="stable")
    totals = [None] * len(enc)
    pairs = len(order) * n_steps
    for start in range(0, pairs, batch_size):
        flat = np.arange(start, min(start + batch_size, pairs))
        example, step = order[flat // n_steps], flat % n_steps                      # (R,) each
        members, row_of = np.unique(example, return_inverse=True)                   # U examples in this batch
        ids, mask = pad([enc.ids[i] for i in members], enc.pad_id, device)          # (U, T)
        base, _ = pad([enc.baseline_ids(i) for i in members], enc.pad_id, device)   # (U, T)
        e_x, e_b = tap.embed(ids), tap.embed(base)                                  # (U, T, E)
        rows = torch.as_tensor(row_of, device=device)                               # (R,)
        alpha = torch.as_tensor(alphas[step], dtype=e_x.dtype, device=device)[:, None, None]  # (R, 1, 1)
        path = (e_b[rows] + alpha * (e_x[rows] - e_b[rows])).requires_grad_(True)   # (R, T, E)
        tap.replacement = path
        logits = logits_of(model, ids[rows], mask[rows]).float()                    # (R, C)
        tap.replacement = None
        chosen = torch.as_tensor(targets[example], device=device)                   # (R,)
        grads, = torch.autograd.grad(logits.gather(1, chosen[:, None]).sum(), path)  # (R, T, E)
        w = torch.as_tensor(weights[step], dtype=grads.dtype, device=device)[:, None, None]  # (R, 1, 1)
        summed = torch.zeros_like(e_x).index_add_(0, rows, grads * w)               # (U, T, E)
        for u, i in enumerate(members):
            part = summed[u, :len(enc.ids[i])]
            totals[i] = part if totals[i] is None else totals[i] + part
    return totals


def attribute(model: nn.Module, enc: Encoded, targets: np.ndarray | None, *, n_steps: int, batch_size: int
              ) -> list[tuple[np.ndarray, int, float]]:
    with embedding_tap(model) as tap:
        diffs, chosen, gaps = _end_points(model, tap, enc, targets, batch_size)
        totals = _path_gradients(model, tap, enc, chosen, n_steps, batch_size)
    results = []
    for diff, total, target, gap in zip(diffs, totals, chosen, gaps):
        scores = (diff * total).sum(-1).double()                                    # (T,)
        delta = abs(float(scores.sum()) - gap) / max(abs(gap), 1e-12)
        results.append((scores.float().cpu().numpy(), int(target), delta))
    return results
