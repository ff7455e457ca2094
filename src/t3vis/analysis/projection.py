"""2-D layouts of hidden states: PCA, UMAP, t-SNE; layouts aligned across checkpoints; their quality.

Pure functions over arrays, no I/O. umap-learn (numba: its kernels compile on first use in a
process, then load from numba's file cache; see `_layouts.import_umap`) and
openTSNE are imported inside the functions that use them, never when this module is imported.

Distances. By default (`metric="cosine"`) every row is scaled to unit length first, so that
euclidean distance, which every method here then uses, ranks neighbours exactly as cosine
distance does (|a - b|^2 = 2 - 2 cos(a, b) for unit vectors). Cosine is what the T3-Vis paper
used and what suits pooled transformer states, whose norms vary with length and layer more
than with meaning. `metric="euclidean"` leaves the rows as they are.

Scale. Inputs wider than `pca_dims` (50) are reduced with PCA first, for t-SNE above 10,000
points (`DEFAULT_PCA_ABOVE`, where its exact neighbour search in the full space ends) and for
UMAP above 50,000: PCA makes neighbour search cheaper, but it also changes which points are
neighbours. On the demo run's 2,000 last-layer states (10-NN preservation against the full
space, cosine), t-SNE kept 0.208 in the full space against 0.183 after PCA to 50 dimensions,
same schedule. Measured with bench_projection's 5,000 demo states: UMAP 0.361 without PCA
against 0.318 after PCA to 50 dimensions, in the same 3.4 s.
UMAP without PCA took 29.2 s on 50,000 points against 26.4 s with.

Large inputs. Over `max_fit` points (default 25,000, both methods) t-SNE and UMAP are fitted on
a seeded random sample of `max_fit` points (stratified when `strata` is given), and every
other point is placed at the inverse-distance-weighted mean of its 10 nearest fitted points'
positions (`_layouts.place`; nearest after the PCA above, by a pynndescent index of the
sample). Their own `transform`s would optimise each placed point further; at a million points
that alone outlasts the fit. PCA above PCA_AXES_FROM rows finds its axes on a seeded sample of
that many rows and scores the rest by blocks. The caller learns of the sample from
`return_info=True`: info["sampled"] is the number of points the layout was fitted on, or None
when every point took part. PCA layouts always use every point. Above PRESERVATION_EXACT_UP_TO
points, `neighborhood_preservation` measures a seeded sample of points (NaN for the rest).
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np

from t3vis.analysis import _devices
from t3vis.analysis import _layouts as L
from t3vis.errors import InvalidInputError

METHODS = ("pca", "umap", "tsne")
METRICS = ("cosine", "euclidean")
DEFAULT_MAX_FIT = {"tsne": 25_000, "umap": 25_000, "pca": None}
# reduce with PCA (pca_dims=-1) above this many points
DEFAULT_PCA_ABOVE = {"tsne": L.TSNE_EXACT_KNN_UP_TO, "umap": 50_000}
ONE_BLAS_THREAD_UP_TO = 20_000                     # rows: see _blas_threads
PRESERVATION_FULL_UP_TO = 20_000                    # neighbourhood_preservation(pca_dims=-1) in the full space
PRESERVATION_EXACT_UP_TO = 50_000                   # neighbourhood_preservation(sample=-1): every point up to here,
PRESERVATION_SAMPLE = 2_000                         # above, estimated on a seeded sample of this many
PCA_AXES_FROM = 100_000                             # above this many rows PCA finds its axes on a sample this big
PCA_BLOCK_ROWS = 65_536                             # rows per block when PCA scores a large input
PREPARE_BLOCK_ROWS = 65_536                         # rows per block when `prepare` copies, checks and scales


def project(X, method: str = "pca", *, seed: int = 0, init=None, metric: str = "cosine", pca_dims: int | None = -1,
            max_fit: int | None = -1, strata=None, n_jobs: int = -1, return_info: bool = False, **params):
    """2-D layout of the rows of X: ndarray (N, 2) float32, or (layout, info) with return_info=True.

    X: (N, d), any float dtype (a float16 memmap is read once, as float32).
    method: "pca", "umap" or "tsne". params go to umap.UMAP (n_neighbors, min_dist, n_epochs, ...)
    or to openTSNE.TSNE (perplexity, n_iter, early_exaggeration_iter, ...).
    init: (N, 2) starting layout for umap / tsne (used by project_aligned); ignored by pca.
    pca_dims: reduce wider inputs to this many dimensions with PCA first (-1: to 50, when the
    method's DEFAULT_PCA_ABOVE says so; None: never). max_fit: fit on at most this many points
    and place the rest (-1: the method's default, None: never sample). strata: (N,) labels to
    stratify that sample by.
    Same X, method, params and seed: same layout (UMAP then runs its optimiser on one thread).
    info: {"method", "metric", "params", "n", "sampled", "pca_dims", "seed"}.
    """
    if method not in METHODS:
        raise InvalidInputError(f"unknown projection method {method!r}; choose one of {list(METHODS)}")
    Z = prepare(X, metric)                                           # (N, d) float32
    with _blas_threads(Z.shape[0]):
        return _project(Z, method, seed=seed, init=init, metric=metric, pca_dims=pca_dims, max_fit=max_fit,
                        strata=strata, n_jobs=n_jobs, return_info=return_info, params=params)


def _project(Z, method, *, seed, init, metric, pca_dims, max_fit, strata, n_jobs, return_info, params):
    """`project` on the prepared rows Z (N, d) float32."""
    n = Z.shape[0]
    max_fit = DEFAULT_MAX_FIT[method] if max_fit == -1 else max_fit
    info = {"method": method, "metric": metric, "params": dict(params), "n": n, "sampled": None,
            "pca_dims": None, "seed": seed}
    if method == "pca":
        if params:
            raise InvalidInputError(f"pca takes no parameters; got {sorted(params)}")
        Y = pca(Z, 2)
    else:
        if pca_dims == -1:
            pca_dims = 50 if n > DEFAULT_PCA_ABOVE[method] else None
        if pca_dims is not None and Z.shape[1] > pca_dims:
            Z, info["pca_dims"] = pca(Z, pca_dims), pca_dims       # (N, pca_dims)
        init = _check_init(init, n)
        fit_rows = _sample_rows(n, max_fit, strata, seed)
        run = _layout_function(method, params, warm=init is not None)
        if fit_rows is None:
            Y = run(Z, seed=seed, init=init, n_jobs=n_jobs, params=params)
        else:                                   # fit on the sample, place the rest among it
            info["sampled"] = len(fit_rows)
            Y_fit = run(Z[fit_rows], seed=seed, init=None if init is None else init[fit_rows], n_jobs=n_jobs,
                        params=params)
            Y = L.place(Z, fit_rows, Y_fit)
    Y = np.ascontiguousarray(Y, dtype=np.float32)
    return (Y, info) if return_info else Y


def _layout_function(method: str, params: dict, *, warm: bool):
    """t-SNE or UMAP on this machine: on a CUDA device where one is present (`_devices`), else
    openTSNE or umap-learn on the CPU. Same call either way: (Z, *, seed, init, n_jobs, params)."""
    backend = _devices.backend_name(method, params, warm=warm)
    if backend == "cpu":
        return L.tsne if method == "tsne" else L.umap
    return functools.partial(_devices.gpu_layout, backend, method)


def layout_rules(method: str) -> dict:
    """The defaults that shape `method`'s layouts beyond its parameters: a cache key names them,
    so that layouts made under older rules are not served as current ones (nor a CPU's as a GPU's)."""
    return {"device": "cpu" if method == "pca" or _devices.layout_device() is None else "gpu",
            "pca_above": DEFAULT_PCA_ABOVE.get(method), "max_fit": DEFAULT_MAX_FIT.get(method),
            "pca_axes_from": PCA_AXES_FROM, **L.default_rules(method)}


def prepare(X, metric: str = "cosine") -> np.ndarray:
    """Checked float32 copy of X (N, d); rows scaled to unit length for metric="cosine".

    By blocks of PREPARE_BLOCK_ROWS rows, so that a large input (a float16 memmap of a million
    rows) is read once and no temporary as large as it is made: at a million rows of 384 dims,
    whole-array copy, check and norms took 10.5 s of CPU, by blocks 3.4 s. Each row's result
    is the same either way."""
    X = _checked(X, metric)
    Z = np.empty(X.shape, np.float32)                                # a copy: the caller's array is kept
    bad = 0
    for lo in range(0, X.shape[0], PREPARE_BLOCK_ROWS):
        bad += _prepare_into(Z[lo:lo + PREPARE_BLOCK_ROWS], X[lo:lo + PREPARE_BLOCK_ROWS], metric)
    if bad:
        raise _bad_rows(bad)
    return Z


def prepared_pca(X, k: int, metric: str = "cosine") -> np.ndarray:
    """pca(prepare(X, metric), k), the same numbers, without the prepared (N, d) copy above
    PCA_AXES_FROM rows: the axes from the prepared sample, then each block prepared and scored
    in turn. At a million rows of 384 dims that copy is 1.5 GB and 3.4 s of CPU."""
    X = _checked(X, metric)
    n = X.shape[0]
    if n <= PCA_AXES_FROM:
        return pca(prepare(X, metric), k)
    mean, axes = _pca_axes(prepare(X[_pca_rows(n)], metric), k)
    scores = np.zeros((n, k), np.float32)                            # past the data's dims: zeros, as pca's
    block = np.empty((min(n, PCA_BLOCK_ROWS), X.shape[1]), np.float32)
    bad = 0
    for lo in range(0, n, PCA_BLOCK_ROWS):
        rows = block[:min(n, lo + PCA_BLOCK_ROWS) - lo]
        bad += _prepare_into(rows, X[lo:lo + PCA_BLOCK_ROWS], metric)
        if not bad:
            scores[lo:lo + len(rows), :axes.shape[1]] = (rows - mean) @ axes
    if bad:
        raise _bad_rows(bad)
    return scores


def _checked(X, metric: str) -> np.ndarray:
    if metric not in METRICS:
        raise InvalidInputError(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] < 3 or X.shape[1] < 1:
        raise InvalidInputError(f"expected an array of shape (N, d) with N >= 3 rows; got shape {X.shape}")
    return X


def _prepare_into(out: np.ndarray, X: np.ndarray, metric: str) -> int:
    """X's rows as float32 into out, scaled to unit length for "cosine"; the number of rows
    holding NaN or infinity (then out is left unscaled)."""
    out[...] = X
    finite = np.isfinite(out)
    if not finite.all():
        return int((~finite).any(axis=1).sum())
    if metric == "cosine":
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.maximum(norms, 1e-12)                              # an all-zero row stays zero
    return 0


def _bad_rows(bad: int) -> InvalidInputError:
    return InvalidInputError(f"{bad} row(s) hold NaN or infinity; drop or fix them before projecting")


def pca(Z: np.ndarray, k: int) -> np.ndarray:
    """Scores (N, k) float32 on the top k principal axes of Z (N, d), largest variance first.

    Through the d x d covariance (cheap when N >> d: 100,000 x 384 takes about a second). Each
    axis's sign is fixed so that its largest-magnitude loading is positive: the same data
    always gives the same picture, not a mirrored one. Above PCA_AXES_FROM rows the mean and
    axes come from a seeded sample of PCA_AXES_FROM rows (at a million rows, the covariance of
    all of them costs ten times as much and moves the top axes by little: the sample holds
    100,000 points) and the scores are computed by blocks of PCA_BLOCK_ROWS rows, so that no
    centred copy of Z is ever made.
    """
    if Z.shape[0] <= PCA_AXES_FROM:
        mean, axes = _pca_axes(Z, k)
        scores = (Z - mean) @ axes                                   # (N, k_eff)
    else:
        mean, axes = _pca_axes(Z[_pca_rows(Z.shape[0])], k)
        scores = np.empty((Z.shape[0], axes.shape[1]), np.float32)
        for lo in range(0, Z.shape[0], PCA_BLOCK_ROWS):
            scores[lo:lo + PCA_BLOCK_ROWS] = (Z[lo:lo + PCA_BLOCK_ROWS] - mean) @ axes
    if scores.shape[1] < k:                                          # fewer dims than asked: pad with zeros
        scores = np.hstack([scores, np.zeros((Z.shape[0], k - scores.shape[1]), np.float32)])
    return np.ascontiguousarray(scores, dtype=np.float32)


def _pca_rows(n: int) -> np.ndarray:
    """The sorted rows, seeded, that PCA finds its axes on above PCA_AXES_FROM rows."""
    return np.sort(np.random.default_rng(0).choice(n, size=PCA_AXES_FROM, replace=False))


def _pca_axes(Z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean (d,) and top min(k, d) principal axes (d, k) of Z (N, d), both float32, signs fixed."""
    mean = Z.mean(axis=0, dtype=np.float64).astype(Z.dtype)
    Zc = Z - mean                                                    # (N, d)
    cov = (Zc.T @ Zc).astype(np.float64)                             # (d, d)
    _values, vectors = np.linalg.eigh(cov)                            # ascending
    k_eff = min(k, Z.shape[1])
    axes = vectors[:, ::-1][:, :k_eff]                               # (d, k_eff)
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(k_eff)])
    axes = axes * np.where(signs == 0, 1.0, signs)
    return mean, axes.astype(np.float32)


def project_aligned(Xs, method: str = "pca", *, anchor: int = -1, seed: int = 0, on_layout=None,
                    **kwargs) -> list[np.ndarray]:
    """Layouts (N, 2) of one layer at each checkpoint, aligned so that still points stay still.

    Xs: list of (N, d) arrays, the same N examples in the same row order at every checkpoint.
    The checkpoint `anchor` (default the last, usually the best-trained) is projected on its own;
    walking out from it, each checkpoint starts from its neighbour's finished layout (UMAP and
    t-SNE take it as `init`; t-SNE then skips early exaggeration, so a layout that is already
    right is refined, not torn up), and every layout is fitted onto its neighbour by an
    orthogonal Procrustes map: rotation or reflection, one uniform scale, a translation.

    Why this and not alternatives: a shared warm start alone leaves the arbitrary rotation,
    mirror and scale that UMAP and t-SNE drift into, and PCA's axes flip sign between
    checkpoints; Procrustes removes exactly those, and because it is a similarity map it never
    distorts the layout itself, so distances on screen keep their meaning. Fitting one joint
    embedding of all checkpoints (AlignedUMAP, dynamic t-SNE) would tie the layouts together
    further but costs k times the memory and time and bends each checkpoint's layout toward
    the others; here each checkpoint's layout stays a faithful layout of that checkpoint.
    A checkpoint whose states equal its neighbour's exactly (a frozen layer, or the embeddings
    when they are not trained) reuses the neighbour's layout: re-optimising would only add noise.
    Otherwise the optimiser adds some: on the demo run's last layer (2,000 points), unchanged
    states re-laid from a warm start drift by a median 1.1% (t-SNE's short schedule: 150
    iterations; 0.3% under openTSNE's own, 500) and 1.8% (UMAP, 10
    neighbours, no PCA; 1.6% after PCA to 50 dimensions) of the layout's extent; on small
    synthetic clusters without inner structure, up to 5% (UMAP).
    Movement beyond that on screen is movement of the hidden states.
    kwargs go to `project` (metric, pca_dims, max_fit, n_jobs, method parameters).
    on_layout(done, total): called after each checkpoint's layout, for progress reports.
    """
    if not Xs:
        raise InvalidInputError("project_aligned needs at least one array (one per checkpoint)")
    sizes = {np.shape(X)[0] for X in Xs}
    if len(sizes) != 1:
        raise InvalidInputError(f"every checkpoint must hold the same examples; got row counts {sorted(sizes)}")
    if kwargs.pop("return_info", False) or "init" in kwargs:
        raise InvalidInputError("project_aligned sets init itself and returns layouts only")
    k = len(Xs)
    anchor = anchor % k
    layouts: dict[int, np.ndarray] = {}                              # checkpoint: (N, 2), filled outwards
    layouts[anchor] = project(Xs[anchor], method, seed=seed, **kwargs)
    report = on_layout or (lambda done, total: None)
    report(1, k)
    order = [(i, i + 1) for i in range(anchor - 1, -1, -1)] + [(i, i - 1) for i in range(anchor + 1, k)]
    for done, (i, ref) in enumerate(order, start=2):                # ref is already done
        layouts[i] = align_next(Xs[i], Xs[ref], layouts[ref], method, seed=seed, **kwargs)
        report(done, k)
    return [layouts[i] for i in range(k)]


def align_next(X, X_ref, layout_ref, method: str = "pca", *, seed: int = 0, **kwargs) -> np.ndarray:
    """The layout (N, 2) float32 of X, aligned onto its neighbour's finished layout: one step of
    `project_aligned`, public so that a chain of layouts can grow one checkpoint at a time.

    X, X_ref: (N, d) states of the same N examples at this checkpoint and at the neighbour;
    layout_ref: (N, 2) the neighbour's layout. UMAP and t-SNE start from layout_ref; the result
    is fitted onto it by `procrustes_align`. States equal to X_ref's reuse layout_ref (a copy):
    re-optimising unchanged states would only add noise. kwargs go to `project`.
    Extending a chain with align_next gives exactly the layouts project_aligned(anchor=0) gives.
    """
    if kwargs.pop("return_info", False) or "init" in kwargs:
        raise InvalidInputError("align_next sets init itself and returns the layout only")
    if not np.shape(X)[0] == np.shape(X_ref)[0] == np.shape(layout_ref)[0]:
        raise InvalidInputError(f"X, X_ref and layout_ref must hold the same examples; got shapes {np.shape(X)}, "
                                f"{np.shape(X_ref)} and {np.shape(layout_ref)}")
    if np.array_equal(np.asarray(X), np.asarray(X_ref)):              # frozen layer: nothing moved,
        return np.array(layout_ref, dtype=np.float32)                 # so nothing moves on screen (a copy)
    warm = L.warm_start_params(method, kwargs)
    Y = project(X, method, seed=seed, init=None if method == "pca" else layout_ref, **{**kwargs, **warm})
    return procrustes_align(Y, layout_ref)


def procrustes_align(Y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Y (N, 2) moved onto ref (N, 2) by the similarity map (rotation/reflection R, scale s,
    translation t) minimising |s Y R + t - ref|^2 (Schönemann 1966). Returns float32 (N, 2)."""
    Y = np.asarray(Y, np.float64)
    ref = np.asarray(ref, np.float64)
    mu_y, mu_r = Y.mean(axis=0), ref.mean(axis=0)
    A, B = Y - mu_y, ref - mu_r
    U, S, Vt = np.linalg.svd(A.T @ B)                                # (2, 2)
    R = U @ Vt                                                       # orthogonal: reflection allowed
    norm = (A * A).sum()
    s = S.sum() / norm if norm > 0 else 1.0
    return (s * A @ R + mu_r).astype(np.float32)


def neighborhood_preservation(X, Y, k: int = 10, *, metric: str = "cosine", pca_dims: int | None = -1,
                              sample: int | None = -1, seed: int = 0) -> np.ndarray:
    """Per point, the share of its k nearest neighbours in X that are among its k nearest in Y.

    X: (N, d) high-dimensional rows; Y: (N, 2) layout. Returns float32 (N,), each in [0, 1];
    1 = neighbourhood kept. Neighbours in X by `metric`, cosine by default because that is
    what `project` lays out (see the module docstring) and what the paper used; in Y by
    euclidean distance, which is what the eye reads. X's neighbours are found by exact search,
    in the full space (pca_dims=None) or after PCA to pca_dims dimensions, an approximation that
    stays affordable at any size. pca_dims=-1: the full space up to PRESERVATION_FULL_UP_TO
    points, PCA to 50 dimensions above (384 dims on 2 cores: 20,000 points took 3.7 s in the
    full space and 1.0 s after PCA; 100,000 took 21 s after PCA).
    sample: measure only a seeded random sample of this many points (their neighbours are
    still searched among all N, exactly, in X and in Y) and leave the others NaN; the mean
    over the sample estimates the mean over all points (its standard error is the per-point
    spread over sqrt(sample): about 0.005 for 2,000). None: every point. -1: every point up to
    PRESERVATION_EXACT_UP_TO, a sample of PRESERVATION_SAMPLE above (a million points would
    take hours exactly; the sample takes seconds). Use np.nanmean for the mean.
    A random layout scores about k / N.
    """
    X = _checked(X, metric)
    n = X.shape[0]
    if pca_dims == -1:
        pca_dims = None if n <= PRESERVATION_FULL_UP_TO else 50
    with _blas_threads(n):
        if pca_dims is not None and X.shape[1] > pca_dims:
            Z = prepared_pca(X, pca_dims, metric)
        else:
            Z = prepare(X, metric)
        return _preservation(Z, np.asarray(Y, dtype=np.float32), k, sample, seed)


def _preservation(Z: np.ndarray, Y: np.ndarray, k: int, sample: int | None, seed: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    n = Z.shape[0]
    if Y.shape[0] != n:
        raise InvalidInputError(f"X has {n} rows but the layout has {Y.shape[0]}")
    if not 1 <= k < n:
        raise InvalidInputError(f"k must be between 1 and N - 1 = {n - 1}; got {k}")
    if sample == -1:
        sample = None if n <= PRESERVATION_EXACT_UP_TO else PRESERVATION_SAMPLE
    if sample is not None and sample < 1:
        raise InvalidInputError(f"sample must be a positive number of points (or None); got {sample}")
    rows = np.arange(n) if sample is None or sample >= n else \
        np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
    high = _knn(NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(Z), Z[rows], rows, k)   # (m, k)
    low = _knn(NearestNeighbors(n_neighbors=k + 1).fit(Y), Y[rows], rows, k)                        # (m, k)
    both = np.concatenate([high, low], axis=1)
    both.sort(axis=1)
    shared = (both[:, 1:] == both[:, :-1]).sum(axis=1)               # each row of high/low is duplicate-free
    out = np.full(n, np.nan, np.float32)
    out[rows] = shared / k
    return out


def _blas_threads(n: int):
    """One BLAS thread while working on up to ONE_BLAS_THREAD_UP_TO rows, else no limit. Their
    matrix products take milliseconds, and on a shared machine a BLAS thread waiting for a busy
    core spins far longer: on 2 cores at load 12, the demo's first aligned PCA projection (5
    checkpoints x 2,000 states, and the preservation of the last) took 14.5 s with OpenBLAS's
    own threads and 0.7 s with one; the t-SNE one took as long either way (10.8 s). The limit
    is process-wide while it lasts (threadpoolctl): other threads' BLAS calls run on one thread
    meanwhile too."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas") if n <= ONE_BLAS_THREAD_UP_TO else contextlib.nullcontext()


def _knn(nn, Q: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Indices (m, k) of the k nearest other points to each query Q (m, p), the points rows (m,) of
    the fitted set (each query's own row removed even among duplicates)."""
    idx = nn.kneighbors(Q, n_neighbors=k + 1, return_distance=False)                    # (m, k+1)
    is_self = idx == rows[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)   # self, else the farthest
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(len(Q)), drop] = False
    return idx[keep].reshape(len(Q), k)


def _check_init(init, n: int):
    if init is None:
        return None
    init = np.asarray(init, dtype=np.float64)
    if init.shape != (n, 2) or not np.isfinite(init).all():
        raise InvalidInputError(f"init must be a finite (N, 2) = ({n}, 2) array; got shape {init.shape}")
    return init


def _sample_rows(n: int, max_fit: int | None, strata, seed: int) -> np.ndarray | None:
    """Sorted row indices of a (stratified) sample of max_fit rows, or None if all rows fit."""
    if max_fit is None or n <= max_fit:
        return None
    if max_fit < 3:
        raise InvalidInputError(f"max_fit must be at least 3 (or None); got {max_fit}")
    rng = np.random.default_rng(seed)
    if strata is None:
        return np.sort(rng.choice(n, size=max_fit, replace=False))
    strata = np.asarray(strata)
    if strata.shape != (n,):
        raise InvalidInputError(f"strata must hold one label per row, shape ({n},); got {strata.shape}")
    keys, inverse = np.unique(strata, return_inverse=True)
    rows = []
    for s in range(len(keys)):                                       # proportional, at least one per stratum
        members = np.flatnonzero(inverse == s)
        take = max(1, round(max_fit * len(members) / n))
        rows.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(rows))
