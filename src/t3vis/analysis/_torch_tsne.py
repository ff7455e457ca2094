"""t-SNE in torch, for a GPU: exact neighbour affinities, exact repulsion, one matrix product per block.

openTSNE and umap-learn run on the CPU only. On a CUDA device the O(N^2) parts of t-SNE are
matrix products, and doing them exactly is faster there than any tree or grid is on two cores,
so this is plain t-SNE (van der Maaten and Hinton 2008) with nothing approximated:

- affinities: each point's 3 x perplexity nearest neighbours (euclidean on the prepared rows,
  which are unit vectors under the cosine metric), a bandwidth per point found by bisection so
  that its conditional distribution has the given perplexity, then symmetrised;
- gradient: attraction over those neighbour pairs, repulsion over every pair, by blocks of
  rows so that memory stays (block x N);
- optimiser: scikit-learn's and openTSNE's (momentum 0.5 then 0.8, per-coordinate gains,
  learning rate max(N / exaggeration / 4, 50)), with the schedule of `_layouts.tsne`.

A sampled fit is the caller's (`projection._project` fits a sample and places the rest). The
same code runs on the CPU, where the tests check it against openTSNE; there `_layouts.tsne` is
the faster choice.
"""

from __future__ import annotations

import math

import numpy as np

from t3vis.errors import InvalidInputError

BLOCK_ROWS = 4096              # rows per block of the neighbour search and of the repulsion
EXAGGERATION = 12.0


def tsne(Z: np.ndarray, *, seed: int, init, device: str, n_iter: int = 150, early_exaggeration_iter: int = 100,
         perplexity: float = 30.0) -> np.ndarray:
    """t-SNE layout (N, 2) float64 of Z (N, p) on `device` ("cuda", "cuda:1", "cpu").

    init: a starting layout (N, 2) whose scale is kept (a warm start), or None for a PCA start
    scaled to std 1e-4 as openTSNE's."""
    import torch

    if not perplexity > 0:
        raise InvalidInputError(f"bad parameter for tsne: perplexity must be positive; got {perplexity}")
    fit = torch.as_tensor(np.ascontiguousarray(Z, dtype=np.float32), device=torch.device(device))   # (n, p)
    n = len(fit)
    k = int(min(n - 1, max(1, round(3 * perplexity))))
    neighbours, d2 = nearest(fit, fit, k, exclude_self=True)                                 # (n, k) each
    P = _joint_affinities(neighbours, _conditional(d2, min(perplexity, (n - 1) / 3)))      # edges
    Y = _optimise(P, _start(fit, init), n_iter=n_iter, early_exaggeration_iter=early_exaggeration_iter)
    return Y.double().cpu().numpy()


def nearest(queries, points, k: int, *, exclude_self: bool):
    """The k nearest rows of points to each query (euclidean): indices (q, k) and squared
    distances (q, k), nearest first. exclude_self: queries are points, each not its own neighbour."""
    import torch

    norms = (points * points).sum(1)
    index_blocks, d2_blocks = [], []
    for lo in range(0, len(queries), BLOCK_ROWS):
        q = queries[lo:lo + BLOCK_ROWS]
        d2 = ((q * q).sum(1)[:, None] + norms[None, :] - 2 * q @ points.T).clamp_min_(0)    # (b, N)
        if exclude_self:
            at = torch.arange(len(q), device=q.device)
            d2[at, at + lo] = math.inf
        near_d2, near = torch.topk(d2, k, dim=1, largest=False)                              # sorted ascending
        index_blocks.append(near)
        d2_blocks.append(near_d2)
    return torch.cat(index_blocks), torch.cat(d2_blocks)


def _conditional(d2, perplexity: float):
    """Rows of p(j | i) over each point's neighbours with entropy log(perplexity): a bandwidth
    per row by bisection on its log, all rows at once (squared distances (n, k) in, (n, k) out)."""
    import torch

    target = math.log(perplexity)
    shifted = d2 - d2[:, :1]                       # the nearest at 0: exp() cannot underflow the whole row
    lo = torch.full((len(d2), 1), -30.0, device=d2.device)
    hi = torch.full((len(d2), 1), 30.0, device=d2.device)
    for _ in range(64):
        beta = torch.exp((lo + hi) / 2)
        p = torch.exp(-shifted * beta)
        total = p.sum(1, keepdim=True)
        entropy = torch.log(total) + beta * (shifted * p).sum(1, keepdim=True) / total
        too_flat = entropy > target                # too much entropy: a narrower kernel, a larger beta
        lo = torch.where(too_flat, (lo + hi) / 2, lo)
        hi = torch.where(too_flat, hi, (lo + hi) / 2)
    p = torch.exp(-shifted * torch.exp((lo + hi) / 2))
    return p / p.sum(1, keepdim=True)


def _joint_affinities(neighbours, conditional):
    """P = (P_cond + P_cond^T) / 2n as edges (i, j, p): each neighbour pair in both directions.
    A pair that are each other's neighbours appears twice each way; the gradient sums over
    edges, so that adds up to p_ij as a summed sparse matrix would."""
    import torch

    n, k = neighbours.shape
    i = torch.arange(n, device=neighbours.device).repeat_interleave(k)
    j = neighbours.reshape(-1)
    values = conditional.reshape(-1) / (2 * n)
    return torch.cat([i, j]), torch.cat([j, i]), torch.cat([values, values])


def _start(fit, init):
    """A given layout as it is (centred), or the PCA of the rows scaled to std 1e-4."""
    import torch

    if init is not None:
        given = torch.as_tensor(np.asarray(init, dtype=np.float32), device=fit.device)
        return given - given.mean(0)
    centred = fit - fit.mean(0)
    Y = centred @ principal_axes(centred, 2)
    if Y.shape[1] < 2:                             # a single feature: a second axis of zeros
        Y = torch.cat([Y, torch.zeros_like(Y)], 1)
    return Y * (1e-4 / Y[:, 0].std().clamp_min(1e-12))


def principal_axes(centred, k: int):
    """The top k principal axes (p, k) of centred rows, by an eigendecomposition of their p x p
    scatter (deterministic, unlike a randomised SVD), each signed so that its largest entry is positive."""
    import torch

    _, vectors = torch.linalg.eigh(centred.T.double() @ centred.double())
    axes = vectors[:, -k:].flip(1)                                        # largest eigenvalue first
    signs = torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True)))
    return (axes * signs).to(centred.dtype)


def _optimise(P, Y, *, n_iter: int, early_exaggeration_iter: int):
    """Gradient descent with momentum and gains (scikit-learn's rules) from Y (n, 2)."""
    import torch

    n = len(Y)
    i, j, p = P
    learning_rate = max(n / EXAGGERATION / 4, 50.0)
    update = torch.zeros_like(Y)
    gains = torch.ones_like(Y)
    for it in range(early_exaggeration_iter + n_iter):
        exaggerated = it < early_exaggeration_iter
        grad = _gradient(Y, i, j, p * (EXAGGERATION if exaggerated else 1.0))
        same_sign = (grad > 0) == (update > 0)
        gains = torch.where(same_sign, gains * 0.8, gains + 0.2).clamp_min_(0.01)
        update = (0.5 if exaggerated else 0.8) * update - learning_rate * gains * grad
        Y = Y + update
        Y = Y - Y.mean(0)
    return Y


def _gradient(Y, i, j, p):
    """dKL/dY (n, 2): 4 sum_j (p_ij - q_ij) w_ij (y_i - y_j) with w_ij = 1 / (1 + |y_i - y_j|^2)."""
    import torch

    diff = Y[i] - Y[j]                                                        # (edges, 2)
    w = 1.0 / (1.0 + (diff * diff).sum(1))
    attraction = torch.zeros_like(Y).index_add_(0, i, (p * w)[:, None] * diff)
    repulsion = torch.empty_like(Y)
    norms = (Y * Y).sum(1)
    total = Y.new_zeros(())
    for lo in range(0, len(Y), BLOCK_ROWS):
        block = Y[lo:lo + BLOCK_ROWS]
        w_all = 1.0 / (1.0 + (norms[lo:lo + BLOCK_ROWS, None] + norms[None, :] - 2 * block @ Y.T).clamp_min_(0))
        at = torch.arange(len(block), device=Y.device)
        w_all[at, at + lo] = 0.0                                              # no pair with itself
        total = total + w_all.sum()
        w2 = w_all * w_all
        repulsion[lo:lo + BLOCK_ROWS] = w2.sum(1, keepdim=True) * block - w2 @ Y
    return 4.0 * (attraction - repulsion / total)
