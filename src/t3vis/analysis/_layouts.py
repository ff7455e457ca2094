"""Backends of `t3vis.analysis.projection`: t-SNE (openTSNE) and UMAP (umap-learn), imported lazily.

Each takes Z (N, p) float32 (already unit-scaled / PCA-reduced by the caller) and returns (N, 2).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from t3vis.errors import InvalidInputError

TSNE_PLACE_ITERS = 100      # iterations placing the points left out of a sampled t-SNE fit
TSNE_EXACT_KNN_UP_TO = 10_000   # t-SNE's neighbours by exact search up to this many fitted points
TSNE_INTS_IN_INTERVAL = 2       # layout units per interval of t-SNE's FFT grid
UMAP_NEIGHBOURS = 10
UMAP_INIT_SCALE = 10.0      # UMAP scales its own spectral init to this; a given init is scaled alike


def warm_start_params(method: str, given: dict) -> dict:
    """Method parameters for a layout started from a neighbouring checkpoint's finished layout.

    t-SNE: no early exaggeration (its job, untangling a random start, is already done); its
    usual 500 iterations (demo run: 0.3% drift on unchanged data; 250 iterations left a far
    checkpoint at 0.12 neighbourhood preservation against 0.27 fitted afresh, 500 at 0.16).
    UMAP: a tenth of its usual step size and 200 epochs. Measured on the demo run (2,000
    points, last layer): a smaller step keeps a still layout stiller but stops it following
    real change (step 0.003: 0.9% drift on unchanged data, but the first checkpoint's layout
    kept 0.03 neighbourhood preservation against 0.18 when fitted afresh); 0.1 drifts 1.4% on
    unchanged data (1.6% since n_neighbors defaults to 10, 1.8% since UMAP sees the full space
    below 50,000 points) and follows change fully (0.19). The caller's settings win.
    """
    warm: dict[str, float]
    if method == "tsne":
        warm = {"early_exaggeration_iter": 0}
    elif method == "umap":
        warm = {"learning_rate": 0.1, "n_epochs": 200}
    else:
        warm = {}
    return {k: v for k, v in warm.items() if k not in given}


def default_rules(method: str) -> dict:
    """The defaults of this module that shape a method's layout (for cache keys: new rules, new layouts)."""
    if method == "tsne":
        return {"exact_knn_up_to": TSNE_EXACT_KNN_UP_TO, "ints_in_interval": TSNE_INTS_IN_INTERVAL}
    if method == "umap":
        return {"n_neighbors": UMAP_NEIGHBOURS}
    return {}


def tsne(Z: np.ndarray, *, seed: int, init, fit_rows, n_jobs: int, params: dict) -> np.ndarray:
    """openTSNE layout (N, 2); FFT gradients from 10,000 points up, Barnes-Hut below (its 'auto').

    Neighbours by exact search up to TSNE_EXACT_KNN_UP_TO fitted points, where it is cheaper
    than openTSNE's approximate index and finds the true neighbours (bench_projection's 5,000
    points: 12.8 s against 14.1 s in all, 10-NN preservation 0.331 against 0.325). The FFT
    grid has an interval per two units of the layout, not per unit: the grid grows as the
    layout spreads, and with one per unit the last 500 iterations on 25,000 points took 61 s
    against 5 s for the first 250 (25,000 bench points in all: 27 s against 69 s, 10-NN
    preservation 0.785 against 0.797).
    """
    from openTSNE import TSNE

    n_fit = len(Z) if fit_rows is None else len(fit_rows)
    kw = {"n_jobs": n_jobs, "random_state": seed, "verbose": False, "ints_in_interval": TSNE_INTS_IN_INTERVAL,
          **({"neighbors": "exact"} if n_fit <= TSNE_EXACT_KNN_UP_TO else {}), **params}
    exaggerate = kw.get("early_exaggeration_iter", 250) > 0
    rows = slice(None) if fit_rows is None else fit_rows
    if init is not None:
        start = init[rows] - init[rows].mean(axis=0)
        if exaggerate:          # openTSNE's advice for a start that will be exaggerated: std 1e-4
            start = start * (1e-4 / max(float(start[:, 0].std()), 1e-12))
        kw["initialization"] = start
    estimator = _construct(TSNE, "tsne", kw)
    quiet = logging.getLogger("openTSNE.tsne")           # it warns of any init with std > 1e-2;
    level = quiet.level                                   # an unexaggerated warm start wants its scale
    quiet.setLevel(logging.ERROR if not exaggerate else level)
    try:
        embedding = estimator.fit(Z[rows])                           # (n_fit, 2)
    finally:
        quiet.setLevel(level)
    if fit_rows is None:
        return np.asarray(embedding)
    rest = np.setdiff1d(np.arange(len(Z)), fit_rows)
    placed = embedding.transform(Z[rest], n_iter=TSNE_PLACE_ITERS)   # (N - n_fit, 2), fitted points fixed
    Y = np.empty((len(Z), 2), np.float64)
    Y[fit_rows], Y[rest] = np.asarray(embedding), np.asarray(placed)
    return Y


def umap(Z: np.ndarray, *, seed: int, init, fit_rows, n_jobs: int, params: dict) -> np.ndarray:
    """umap-learn layout (N, 2). A seed makes UMAP optimise on one thread (its rule for determinism).

    n_neighbors defaults to 10, not umap-learn's 15: the view is read for local neighbourhoods.
    Measured on 5,000 demo states (bench_projection's points, after PCA to 50 dimensions): 10-NN
    preservation 0.318 against 0.298 with 15, and 3.3 s against 4.0 s once compiled. Fewer
    neighbours preserve a little more (8 with min_dist 0.0: 0.331-0.335 over three seeds) but
    make the aligned view across checkpoints shimmer: unchanged states re-laid from a warm
    start drift by a median 2.7% of the extent (3.1% with 8 and min_dist 0.1) against 1.6%
    with these defaults (both after PCA to 50 dimensions).
    """
    import umap as umap_learn

    n_fit = len(Z) if fit_rows is None else len(fit_rows)
    kw = {"n_components": 2, "random_state": seed, "n_jobs": 1 if seed is not None else n_jobs,
          "n_neighbors": min(UMAP_NEIGHBOURS, n_fit - 1), **params}
    rows = slice(None) if fit_rows is None else fit_rows
    if init is not None:
        start = _equal_extents(init[rows] - init[rows].mean(axis=0))
        kw["init"] = start * (UMAP_INIT_SCALE / max(float(np.abs(start).max()), 1e-12))
    estimator = _construct(umap_learn.UMAP, "umap", kw)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(n_jobs|random_state|disconnected|spectral).*")
        fitted = estimator.fit_transform(Z[rows])                    # (n_fit, 2)
        if fit_rows is None:
            return fitted
        rest = np.setdiff1d(np.arange(len(Z)), fit_rows)
        placed = estimator.transform(Z[rest])                        # (N - n_fit, 2)
    Y = np.empty((len(Z), 2), np.float64)
    Y[fit_rows], Y[rest] = fitted, placed
    return Y


def _equal_extents(P: np.ndarray) -> np.ndarray:
    """P (n, 2) rotated so that both axes span the same range.

    UMAP min-max scales each axis of a given init to [0, 10] on its own, which would stretch
    the layout anisotropically (no similarity map undoes that); after this rotation its
    scaling is uniform. The range ratio of the axes moves continuously from r to 1/r as the
    rotation goes from 0 to 90 degrees, so bisection finds the angle.
    """
    def rotated(theta):
        c, s = np.cos(theta), np.sin(theta)
        return P @ np.array([[c, -s], [s, c]])

    def imbalance(theta):
        ext = np.ptp(rotated(theta), axis=0)
        return np.log(max(ext[0], 1e-12)) - np.log(max(ext[1], 1e-12))

    lo, hi = 0.0, np.pi / 2
    f_lo = imbalance(lo)
    if f_lo == 0 or f_lo * imbalance(hi) > 0:
        return P
    for _ in range(40):
        mid = (lo + hi) / 2
        if imbalance(mid) * f_lo > 0:
            lo = mid
        else:
            hi = mid
    return rotated((lo + hi) / 2)


def _construct(cls, method: str, kw: dict):
    try:
        return cls(**kw)
    except TypeError as e:
        raise InvalidInputError(f"bad parameter for {method}: {e}") from None
