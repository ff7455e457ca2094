"""Backends of `t3vis.analysis.projection`: t-SNE (openTSNE) and UMAP (umap-learn), imported lazily.

Each takes Z (N, p) float32 (already unit-scaled / PCA-reduced by the caller) and returns (N, 2).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from t3vis.errors import InvalidInputError

TSNE_EXACT_KNN_UP_TO = 10_000   # t-SNE's neighbours by exact search (numpy, in chunks) up to this many fitted points
TSNE_INTS_IN_INTERVAL = 2       # layout units per interval of t-SNE's FFT grid
TSNE_SHORT_UP_TO = 10_000       # up to this many fitted points, t-SNE runs the short schedule below
TSNE_SHORT_SCHEDULE = {"early_exaggeration_iter": 70, "n_iter": 110, "theta": 1.0}
TSNE_ONE_THREAD_UP_TO = 5_000   # below this, one thread: a second one costs more in hand-offs than it saves
KNN_CHUNK_ROWS = 1024           # rows per block of the exact neighbour search: a (1024, N) float32 block
UMAP_NEIGHBOURS = 10
UMAP_SMALL_DATA = 4096          # below this umap-learn computes all distances, one Python call per pair: ours instead
WARM_TSNE_CHECK_EVERY = 20      # a warm-started t-SNE checks its KL divergence this often
WARM_TSNE_SETTLED = 0.01        # and stops once a check gained less than this share of it
PLACE_NEIGHBOURS = 10           # a point left out of a sampled fit sits among this many fitted neighbours
PLACE_BLOCK_ROWS = 65_536       # rows per block of the placement's neighbour search
PLACE_EXACT_PAIRS = 200_000_000 # placement searches exactly up to this many (placed x fitted) pairs (~1 s)
UMAP_INIT_SCALE = 10.0      # UMAP scales its own spectral init to this; a given init is scaled alike


def warm_start_params(method: str, given: dict) -> dict:
    """Method parameters for a layout started from a neighbouring checkpoint's finished layout.

    t-SNE: no early exaggeration (its job, untangling a random start, is already done), then at
    most the schedule's plain iterations (the short schedule's 150 up to TSNE_SHORT_UP_TO fitted
    points, openTSNE's 500 above), stopped early once the layout has settled: every
    WARM_TSNE_CHECK_EVERY iterations openTSNE reports the KL divergence, and a check that gained
    less than WARM_TSNE_SETTLED (1%) of it ends the run (`Settled`). A checkpoint whose states
    barely moved settles in 40 iterations, one that changed much runs longer. Measured on the
    demo run (2,000 states, last layer, steps 8-32 each from the one before, 2 shared cores):
    10-NN preservation 0.1863, 0.1848, 0.1878, 0.1875 against 0.1917, 0.1894, 0.1926, 0.1940
    with a fixed 150 iterations, the four layouts in 1.2 s of CPU against 3.3 s. On layers 3-6
    of its last checkpoint standing in for checkpoints (larger changes, so more iterations):
    0.0540, 0.2446, 0.2269, 0.1789 against 0.0542, 0.2521, 0.2408, 0.1824, in 2.4 s against
    3.1 s. Checking every 25 iterations (so at least 50) lost at most 0.0085 there and 0.0054
    on the demo's checkpoints, in 1.5 s. A fixed 50 iterations kept
    0.04 less on those layers.
    UMAP: a tenth of its usual step size and 200 epochs. Measured on the demo run (2,000
    points, last layer): a smaller step keeps a still layout stiller but stops it following
    real change (step 0.003: 0.9% drift on unchanged data, but the first checkpoint's layout
    kept 0.03 neighbourhood preservation against 0.18 when fitted afresh); 0.1 drifts 1.4% on
    unchanged data (1.6% since n_neighbors defaults to 10, 1.8% since UMAP sees the full space
    below 50,000 points) and follows change fully (0.19). The caller's settings win.
    """
    warm: dict
    if method == "tsne":
        warm = {"early_exaggeration_iter": 0, "callbacks": Settled(WARM_TSNE_SETTLED),
                "callbacks_every_iters": WARM_TSNE_CHECK_EVERY}
    elif method == "umap":
        warm = {"learning_rate": 0.1, "n_epochs": 200}
    else:
        warm = {}
    if method == "tsne" and {"n_iter", "callbacks"} & set(given):       # the caller's iterations: all of them
        warm = {"early_exaggeration_iter": 0}
    return {k: v for k, v in warm.items() if k not in given}


class Settled:
    """openTSNE callback: stop once the KL divergence gained less than `share` of itself since the
    last check. One instance per layout: it remembers the last value."""

    def __init__(self, share: float):
        self.share = share
        self.last: float | None = None

    def __call__(self, iteration: int, error: float, embedding) -> bool:
        settled = self.last is not None and self.last - error < self.share * abs(error)
        self.last = error
        return settled

    def __repr__(self) -> str:
        return f"Settled({self.share})"


def default_rules(method: str) -> dict:
    """The defaults of this module that shape a method's layout (for cache keys: new rules, new layouts)."""
    placing = {"place_neighbours": PLACE_NEIGHBOURS}
    if method == "tsne":
        return {"exact_knn_up_to": TSNE_EXACT_KNN_UP_TO, "ints_in_interval": TSNE_INTS_IN_INTERVAL,
                "short_up_to": TSNE_SHORT_UP_TO, **TSNE_SHORT_SCHEDULE, **placing,
                "warm_settled": [WARM_TSNE_CHECK_EVERY, WARM_TSNE_SETTLED]}
    if method == "umap":
        return {"n_neighbors": UMAP_NEIGHBOURS, **placing}
    return {}


def tsne(Z: np.ndarray, *, seed: int, init, n_jobs: int, params: dict) -> np.ndarray:
    """openTSNE layout (N, 2); FFT gradients from 10,000 points up, Barnes-Hut below (its 'auto').

    Up to TSNE_SHORT_UP_TO fitted points (the demo's 2,000 states, any probe set of a run):
    neighbours by exact search in numpy (`exact_neighbours`: on 2,000 x 384 a single matrix
    product, 0.1 s), openTSNE's PCA start, and a short schedule, 70 iterations of early
    exaggeration and 110 plain ones instead of openTSNE's 250 + 500, with Barnes-Hut's theta at
    1.0, not 0.5 (it only coarsens the repulsion). From a PCA start the layout's neighbourhoods
    are in place early: on the demo run's last layer (2,000 states, cosine, full space) 10-NN
    preservation was 0.208 after 250 + 500 iterations, 0.197 after 100 + 150 at theta 0.8
    (1.34 s on one thread) and 0.1925 after 70 + 110 at 1.0 (0.86 s), against 0.202 for the
    paper's 2,000 iterations of scikit-learn's exact t-SNE (9.8 s on two threads). Shorter
    schedules cost the aligned chain its stillness before they cost preservation: every later
    checkpoint starts from this layout, and one less settled moves on. On
    tests/unit/test_projection.py's stillness check (median displacement between two aligned
    layouts of slightly noisy data) 100 + 150 at 0.8 moved 1.8%, 70 + 110 at 1.0 1.8%,
    80 + 120 at 1.0 1.1%, but 60 + 90 at 0.8 3.2% and 60 + 100 at 1.0 4.1%.
    Below TSNE_ONE_THREAD_UP_TO points it runs on one thread: on 2 shared cores, 250
    iterations took 2.7 s of CPU on one thread and 6.0 s on two.
    Above, openTSNE's own schedule, with exact neighbours up to TSNE_EXACT_KNN_UP_TO fitted
    points (bench_projection's 5,000 points: 12.8 s against 14.1 s with its approximate index).
    The FFT grid has an interval per two units of the layout, not per unit: the grid grows as
    the layout spreads, and with one per unit the last 500 iterations on 25,000 points took 61 s
    against 5 s for the first 250 (25,000 bench points in all: 27 s against 69 s, 10-NN
    preservation 0.785 against 0.797). params (perplexity, n_iter, ...) override all of this.
    """
    from openTSNE import TSNE

    n_fit = len(Z)
    threads = 1 if n_fit <= TSNE_ONE_THREAD_UP_TO else n_jobs
    kw = {"n_jobs": threads, "random_state": seed, "verbose": False, "ints_in_interval": TSNE_INTS_IN_INTERVAL,
          **({"neighbors": "exact"} if n_fit <= TSNE_EXACT_KNN_UP_TO else {}),
          **(TSNE_SHORT_SCHEDULE if n_fit <= TSNE_SHORT_UP_TO else {}), **params}
    exaggerate = kw.get("early_exaggeration_iter", 250) > 0
    start = None
    if init is not None:
        start = init - init.mean(axis=0)
        if exaggerate:          # openTSNE's advice for a start that will be exaggerated: std 1e-4
            start = start * (1e-4 / max(float(start[:, 0].std()), 1e-12))
    estimator = _construct(TSNE, "tsne", kw)
    affinities = None
    if kw.get("neighbors") == "exact" and not {"metric", "knn_kwargs"} & set(params):
        affinities = _exact_affinities(Z, kw.get("perplexity", 30), threads)
    quiet = logging.getLogger("openTSNE.tsne")           # it warns of given affinities (we chose them) and of
    level = quiet.level                                   # any init with std > 1e-2 (a warm start wants its scale)
    quiet.setLevel(logging.ERROR)
    try:
        embedding = estimator.fit(Z, affinities=affinities, initialization=start)          # (N, 2)
    finally:
        quiet.setLevel(level)
    return np.asarray(embedding)


def _exact_affinities(Z: np.ndarray, perplexity: float, n_jobs: int):
    """openTSNE's perplexity affinities over exact neighbours: as many as openTSNE would take
    (3 x perplexity), found by `exact_neighbours` instead of its own index."""
    from openTSNE.affinity import PerplexityBasedNN
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    if not perplexity > 0:
        raise InvalidInputError(f"bad parameter for tsne: perplexity must be positive; got {perplexity}")
    k = int(min(len(Z) - 1, max(1, 3 * perplexity)))
    neighbours, distances = exact_neighbours(Z, k)
    return PerplexityBasedNN(perplexity=min(perplexity, (len(Z) - 1) / 3), n_jobs=n_jobs,
                             knn_index=PrecomputedNeighbors(neighbours, distances))


def exact_neighbours(Z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest other rows of Z (N, p) by euclidean distance, nearest first:
    indices (N, k) int64 and distances (N, k) float64. By blocks of KNN_CHUNK_ROWS rows, each
    one matrix product; a row is never its own neighbour, even among duplicates."""
    n = len(Z)
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    norms = (Z * Z).sum(axis=1)                                      # (N,)
    indices = np.empty((n, k), np.int64)
    distances = np.empty((n, k), np.float64)
    for lo in range(0, n, KNN_CHUNK_ROWS):
        hi = min(n, lo + KNN_CHUNK_ROWS)
        d2 = norms[lo:hi, None] + norms[None, :] - 2 * (Z[lo:hi] @ Z.T)             # (c, N)
        d2[np.arange(hi - lo), np.arange(lo, hi)] = np.inf           # not its own neighbour
        near = np.argpartition(d2, k - 1, axis=1)[:, :k]             # (c, k), unordered
        near_d2 = np.take_along_axis(d2, near, axis=1)
        order = np.argsort(near_d2, axis=1, kind="stable")
        indices[lo:hi] = np.take_along_axis(near, order, axis=1)
        distances[lo:hi] = np.sqrt(np.maximum(np.take_along_axis(near_d2, order, axis=1), 0.0))
    return indices, distances


def umap(Z: np.ndarray, *, seed: int, init, n_jobs: int, params: dict) -> np.ndarray:
    """umap-learn layout (N, 2). A seed makes UMAP optimise on one thread (its rule for determinism).

    n_neighbors defaults to 10, not umap-learn's 15: the view is read for local neighbourhoods.
    Measured on 5,000 demo states (bench_projection's points, after PCA to 50 dimensions): 10-NN
    preservation 0.318 against 0.298 with 15, and 3.3 s against 4.0 s once compiled. Fewer
    neighbours preserve a little more (8 with min_dist 0.0: 0.331-0.335 over three seeds) but
    make the aligned view across checkpoints shimmer: unchanged states re-laid from a warm
    start drift by a median 2.7% of the extent (3.1% with 8 and min_dist 0.1) against 1.6%
    with these defaults (both after PCA to 50 dimensions).
    Below UMAP_SMALL_DATA points umap-learn would compute every distance through scikit-learn
    with its numba metric as a Python callable, one call per pair; here the neighbours come
    from `exact_neighbours` (the same neighbours, one matrix product) as its precomputed_knn.
    On the demo run (2,000 states, last layer, 2 shared cores): a layout in 1.6 s of CPU
    against 3.7 s (10-NN preservation 0.143 against 0.142), the 5-checkpoint aligned chain in
    4.3 s against 14.9 s (0.153, 0.153, 0.151, 0.153, 0.152 against 0.150, 0.151, 0.151, 0.152,
    0.152).
    """
    umap_learn = import_umap()
    kw = {"n_components": 2, "random_state": seed, "n_jobs": 1 if seed is not None else n_jobs,
          "n_neighbors": min(UMAP_NEIGHBOURS, len(Z) - 1), **params}
    if len(Z) < UMAP_SMALL_DATA and not {"metric", "precomputed_knn", "force_approximation_algorithm"} & set(params):
        kw["precomputed_knn"] = _umap_knn(Z, kw["n_neighbors"])
    if init is not None:
        start = _equal_extents(init - init.mean(axis=0))
        kw["init"] = start * (UMAP_INIT_SCALE / max(float(np.abs(start).max()), 1e-12))
    estimator = _construct(umap_learn.UMAP, "umap", kw)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(n_jobs|random_state|disconnected|spectral|knn_search_index).*")
        return estimator.fit_transform(Z)                            # (N, 2)


def _umap_knn(Z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """UMAP's k-NN graph of Z (N, p): indices (N, k) int32 and distances (N, k) float32, each
    row's own first (at distance 0), then its k - 1 nearest other rows, found exactly."""
    near, distances = exact_neighbours(Z, k - 1)
    own = np.arange(len(Z))[:, None]
    return (np.hstack([own, near]).astype(np.int32),
            np.hstack([np.zeros_like(own, dtype=np.float64), distances]).astype(np.float32))


def place(Z: np.ndarray, fit_rows: np.ndarray, Y_fit: np.ndarray, *, k: int = PLACE_NEIGHBOURS,
          seed: int = 0) -> np.ndarray:
    """The layout (N, 2) of every row of Z (N, p): the fitted rows at Y_fit (n_fit, 2), each other
    row at the inverse-distance-weighted mean of its k nearest fitted rows' positions.

    What UMAP's and openTSNE's own `transform` start from, without their optimisation after: at
    a million points that optimisation alone outlasts the fit (openTSNE: 100 iterations per
    point). A copy of a fitted row lands on it. The neighbours: exact (scikit-learn's
    brute-force search) up to PLACE_EXACT_PAIRS row pairs, else from a pynndescent index of the
    fitted rows (seeded, one thread: deterministic). Measured on 200,000 demo states after PCA
    to 50 dimensions against 25,000 fitted: the index found 97% of the exact 10 nearest, and
    placing 1,000,000 rows that way takes about 5 s of CPU against about 80 s exactly. Its
    kernels compile on the first use in a process (numba; `import_umap` caches what it can).
    """
    n = len(Z)
    Y_fit = np.asarray(Y_fit, np.float64)
    Y = np.empty((n, 2), np.float64)
    Y[fit_rows] = Y_fit
    rest = np.setdiff1d(np.arange(n), fit_rows)
    k = min(k, len(fit_rows))
    nearest = _nearest_fitted(Z[fit_rows], k, len(rest), seed)
    for lo in range(0, len(rest), PLACE_BLOCK_ROWS):
        rows = rest[lo:lo + PLACE_BLOCK_ROWS]
        near, distances = nearest(np.ascontiguousarray(Z[rows]))                          # (b, k) each
        weights = 1.0 / np.maximum(distances, 1e-12)                                       # a copy outweighs all
        weights /= weights.sum(axis=1, keepdims=True)
        Y[rows] = np.einsum("bk,bkc->bc", weights, Y_fit[near])
    return Y


def _nearest_fitted(fitted: np.ndarray, k: int, n_queries: int, seed: int):
    """A function from query rows (b, p) to the indices and distances (b, k) of their k nearest
    rows of `fitted`: exact for small searches, by pynndescent for large ones."""
    if len(fitted) * n_queries <= PLACE_EXACT_PAIRS:
        from sklearn.neighbors import NearestNeighbors

        index = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(fitted)

        def exact(Q):
            distances, near = index.kneighbors(Q)
            return near, distances

        return exact
    import_umap()                       # numba's file cache on for pynndescent's kernels
    from pynndescent import NNDescent

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(cache|dynamic globals).*")
        graph = NNDescent(np.ascontiguousarray(fitted, dtype=np.float32), n_neighbors=max(15, k), random_state=seed,
                          n_jobs=1)
        graph.prepare()

    def approximate(Q):
        near, distances = graph.query(Q.astype(np.float32, copy=False), k=k)
        return near, distances

    return approximate


def numba_cache_dir() -> Path:
    """Where numba keeps compiled kernels between processes: $NUMBA_CACHE_DIR if set, else
    t3vis/numba under the user's cache folder ($XDG_CACHE_HOME, else ~/.cache)."""
    given = os.environ.get("NUMBA_CACHE_DIR")
    if given:
        return Path(given)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "t3vis" / "numba"


def import_umap():
    """umap-learn, with numba's on-disk cache on for every kernel of umap and pynndescent.

    umap-learn compiles its kernels on first use in each process (28.9 s for the first 2,000-
    point layout on 2 shared cores, 7.9 s for the second), and only one of its ~120 kernels is
    declared cache=True. Here every compiled kernel of umap.* and pynndescent.* gets numba's
    file cache (`enable_caching`, what cache=True does) in `numba_cache_dir()`, so that a later
    process loads them instead of compiling. numba keys each entry by the source file's time
    stamp and the CPU, so an upgraded package or another machine compiles afresh. A folder that
    cannot be written only costs the compilation (numba then warns and carries on).
    """
    folder = numba_cache_dir()
    if os.environ.get("NUMBA_CACHE_DIR") != str(folder):
        os.environ["NUMBA_CACHE_DIR"] = str(folder)
        if "numba.core.config" in sys.modules:      # numba read its settings already: again, with ours
            from numba.core import config

            config.reload_config()
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
    import umap

    _cache_kernels(("umap", "pynndescent"))
    return umap


def _cache_kernels(packages: tuple[str, ...]) -> None:
    """Turn on numba's file cache for every not-yet-cached kernel in the loaded modules of packages."""
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in packages:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, CPUDispatcher) and isinstance(getattr(value, "_cache", None), NullCache):
                value.enable_caching()


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
