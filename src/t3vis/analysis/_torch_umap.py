"""UMAP in torch, for a GPU: exact neighbours, umap-learn's fuzzy graph, epochs as batched updates.

umap-learn optimises with numba on the CPU, one edge at a time. On a CUDA device this module
does what cuML's UMAP does when it is not installed: the same graph as umap-learn (McInnes et
al. 2018; `smooth_knn_dist`, fuzzy union, the a/b curve for min_dist), then every epoch updates
all edges at once:

- each edge pulls its two ends together with umap-learn's attractive gradient, scaled by its
  weight over the largest (umap-learn samples an edge that often instead);
- each edge's head is pushed from `NEGATIVE_SAMPLES` random points with the repulsive gradient;
- every gradient coordinate is clipped to [-4, 4] and the step shrinks linearly to 0, as
  umap-learn's.

The same code runs on the CPU, where the tests check it against umap-learn.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from t3vis.analysis._torch_tsne import nearest, principal_axes

NEGATIVE_SAMPLES = 5
INIT_SCALE = 10.0


def umap(Z: np.ndarray, *, seed: int, init, device: str, n_neighbors: int = 10, min_dist: float = 0.1,
         n_epochs: int | None = None, learning_rate: float = 1.0) -> np.ndarray:
    """UMAP layout (N, 2) float64 of Z (N, p) on `device`. init: a starting layout (N, 2),
    rescaled as umap-learn rescales a given one, or None for a PCA start."""
    import torch

    dev = torch.device(device)
    generator = torch.Generator(device=dev).manual_seed(int(seed))
    fit = torch.as_tensor(np.ascontiguousarray(Z, dtype=np.float32), device=dev)
    n = len(fit)
    k = max(1, min(n_neighbors, n) - 1)                  # umap-learn's n_neighbors counts the point itself
    neighbours, d2 = nearest(fit, fit, k, exclude_self=True)
    head, tail, weight = _fuzzy_graph(neighbours, d2.sqrt(), n_neighbors)
    epochs = n_epochs if n_epochs is not None else (500 if n <= 10_000 else 200)
    keep = weight >= weight.max() / epochs               # umap-learn drops edges it would never sample
    head, tail, weight = head[keep], tail[keep], weight[keep]
    a, b = curve_parameters(1.0, float(min_dist))
    Y = _optimise(_start(fit, init), head, tail, weight / weight.max(), a, b, epochs, learning_rate, generator)
    return Y.double().cpu().numpy()


def _fuzzy_graph(neighbours, distances, n_neighbors: int):
    """umap-learn's fuzzy simplicial set as edges (head, tail, weight), each unordered pair once
    per direction: memberships exp(-(d - rho) / sigma) with sigma per point by bisection so that
    they sum to log2(n_neighbors), then the fuzzy union a + b - ab of the two directions."""
    import torch

    n, k = neighbours.shape
    rho = distances[:, :1]
    excess = (distances - rho).clamp_min(0)
    target = math.log2(n_neighbors)
    lo = torch.full((n, 1), -20.0, device=distances.device)
    hi = torch.full((n, 1), 20.0, device=distances.device)
    for _ in range(64):                                  # bisection on log sigma
        total = torch.exp(-excess / torch.exp((lo + hi) / 2)).sum(1, keepdim=True)
        too_wide = total > target
        hi = torch.where(too_wide, (lo + hi) / 2, hi)
        lo = torch.where(too_wide, lo, (lo + hi) / 2)
    membership = torch.exp(-excess / torch.exp((lo + hi) / 2)).reshape(-1)
    i = torch.arange(n, device=neighbours.device).repeat_interleave(k)
    j = neighbours.reshape(-1)
    forward_key = i * n + j
    order = torch.argsort(forward_key)
    sorted_keys = forward_key[order]
    back_key = j * n + i                                 # where the reverse edge would sit
    at = torch.searchsorted(sorted_keys, back_key).clamp_max(len(sorted_keys) - 1)
    reverse = torch.where(sorted_keys[at] == back_key, membership[order][at], torch.zeros_like(membership))
    union = membership + reverse - membership * reverse
    # an edge found both ways appears twice: keep the one with i < j, and every one-way edge
    one_way = sorted_keys[at] != back_key
    keep = one_way | (i < j)
    head = torch.cat([i[keep], j[keep]])
    tail = torch.cat([j[keep], i[keep]])
    weight = torch.cat([union[keep], union[keep]])
    return head, tail, weight


@lru_cache(maxsize=16)
def curve_parameters(spread: float, min_dist: float) -> tuple[float, float]:
    """umap-learn's a, b: the curve 1 / (1 + a x^2b) fitted to 1 below min_dist and
    exp(-(x - min_dist) / spread) above it, on x in [0, 3 spread]."""
    from scipy.optimize import curve_fit

    x = np.linspace(0, spread * 3, 300)
    y = np.where(x < min_dist, 1.0, np.exp(-(x - min_dist) / spread))
    (a, b), _ = curve_fit(lambda x, a, b: 1.0 / (1.0 + a * x ** (2 * b)), x, y)
    return float(a), float(b)


def _start(fit, init):
    """A given layout, or the fitted rows' PCA, scaled as umap-learn scales an init: to at most INIT_SCALE."""
    import torch

    if init is not None:
        Y = torch.as_tensor(np.asarray(init, dtype=np.float32), device=fit.device)
    else:
        centred = fit - fit.mean(0)
        V = principal_axes(centred, 2)
        Y = centred @ V
    Y = Y - Y.mean(0)
    return Y * (INIT_SCALE / Y.abs().max().clamp_min(1e-12))


def _optimise(Y, head, tail, strength, a: float, b: float, epochs: int, learning_rate: float, generator):
    """Every edge's attraction and NEGATIVE_SAMPLES repulsions per epoch, summed per point."""
    import torch

    n = len(Y)
    for epoch in range(epochs):
        alpha = learning_rate * (1.0 - epoch / epochs)
        diff = Y[head] - Y[tail]                                               # (E, 2)
        d2 = (diff * diff).sum(1, keepdim=True)
        pull = (-2.0 * a * b * d2.clamp_min(1e-12) ** (b - 1.0)) / (1.0 + a * d2 ** b)
        move = (pull * diff).clamp(-4, 4) * strength[:, None]
        step = torch.zeros_like(Y).index_add_(0, head, move).index_add_(0, tail, -move)
        others = torch.randint(0, n, (len(head) * NEGATIVE_SAMPLES,), device=Y.device, generator=generator)
        heads = head.repeat_interleave(NEGATIVE_SAMPLES)
        diff = Y[heads] - Y[others]
        d2 = (diff * diff).sum(1, keepdim=True)
        push = torch.where(d2 > 0, 2.0 * b / ((0.001 + d2) * (1.0 + a * d2 ** b)), torch.zeros_like(d2))
        repel = (push * diff).clamp(-4, 4) * strength.repeat_interleave(NEGATIVE_SAMPLES)[:, None]
        step.index_add_(0, heads, repel)
        Y = Y + alpha * step
    return Y
