"""Projections: PCA against a hand computation, UMAP / t-SNE shapes and determinism, aligned
layouts that keep still points still, and neighbourhood preservation on known cases.

umap-learn takes ~20 s to import; the UMAP tests share one process, so that cost is paid once.
Data are small (<= 300 points) to keep the suite fast on two cores.
"""

import itertools
import subprocess
import sys

import numpy as np
import pytest

from t3vis.analysis import neighborhood_preservation, project, project_aligned
from t3vis.analysis.projection import procrustes_align
from t3vis.errors import InvalidInputError


def blobs(n_per=60, centers=3, d=20, seed=0, spread=0.3):
    """(n_per * centers, d) float32 clusters around random centres, and their labels."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centers, d)) * 3
    labels = np.repeat(np.arange(centers), n_per)
    X = means[labels] + rng.normal(scale=spread, size=(len(labels), d))
    return X.astype(np.float32), labels


def sheets(n_per=60, centers=3, d=20, seed=0):
    """(n_per * centers, d) float32: clusters that are 2-D patches in d dims (plus faint noise),
    like hidden states, which lie near low-dimensional surfaces. (In isotropic Gaussian blobs
    nothing pins a point inside its cluster, and warm-started UMAP / t-SNE let points wander
    there: 1.4% (t-SNE) and 5% (UMAP) of the extent per unchanged checkpoint.)"""
    rng = np.random.default_rng(seed)
    parts = [rng.normal(size=d) * 3 + rng.normal(size=(n_per, 2)) @ rng.normal(size=(2, d)) * 0.5
             for _ in range(centers)]
    X = np.concatenate(parts) + rng.normal(scale=0.01, size=(n_per * centers, d))
    return X.astype(np.float32)


def median_displacement(a, b):
    """Median distance a point moved between layouts a and b, as a share of b's extent."""
    return float(np.median(np.linalg.norm(a - b, axis=1)) / np.ptp(b, axis=0).max())


def test_importing_the_module_loads_neither_umap_nor_opentsne():
    code = ("import sys, t3vis.analysis.projection, t3vis.analysis as a; a.project; "
            "print(sorted(m for m in ('umap', 'openTSNE', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_pca_matches_a_hand_computation():
    X = np.array([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0], [4.0, 2.0, 1.0], [1.0, 3.0, 0.5], [3.0, 1.0, 2.0]])
    Y = project(X, "pca", metric="euclidean")
    Xc = X - X.mean(axis=0)
    U, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    expected = U[:, :2] * S[:2]                          # scores on the top two axes
    signs = np.sign(Vt[np.arange(2), np.abs(Vt[:2]).argmax(axis=1)])   # largest loading made positive
    assert Y.dtype == np.float32 and Y.shape == (5, 2)
    np.testing.assert_allclose(Y, expected * signs, atol=1e-5)


def test_cosine_metric_projects_the_unit_rows(tmp_path):
    X, _ = blobs(d=8)
    path = tmp_path / "h.npy"
    np.save(path, (X * 7).astype(np.float16))
    mm = np.load(path, mmap_mode="r")                   # float16 memmap, as ck.hidden() gives
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(project(mm, "pca"), project(unit, "pca", metric="euclidean"), atol=3e-3)
    assert project(mm, "pca").dtype == np.float32


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_layout_shape_dtype_determinism_and_clusters(method):
    X, labels = blobs(d=64)                              # d > 50, but neither reduces by PCA at 180 points
    Y, info = project(X, method, seed=3, return_info=True)
    again = project(X, method, seed=3)
    assert Y.shape == (180, 2) and Y.dtype == np.float32 and np.isfinite(Y).all()
    np.testing.assert_array_equal(Y, again)
    assert info["method"] == method and info["sampled"] is None and info["n"] == 180
    assert info["pca_dims"] is None                     # t-SNE: exact neighbours in the full space up to 10,000
    centroids = np.stack([Y[labels == c].mean(axis=0) for c in range(3)])
    nearest = np.linalg.norm(Y[:, None] - centroids[None], axis=2).argmin(axis=1)
    assert (nearest == labels).mean() > 0.95             # well-separated clusters stay apart
    assert neighborhood_preservation(X, Y, k=10).mean() > 0.3       # chance: k / N = 0.06


def test_pca_first_follows_the_method_default_or_the_caller(monkeypatch):
    import t3vis.analysis.projection as P

    X, _ = blobs(d=64)
    assert project(X, "umap", return_info=True)[1]["pca_dims"] is None
    assert project(X, "umap", pca_dims=20, return_info=True)[1]["pca_dims"] == 20
    assert project(X, "tsne", pca_dims=None, return_info=True)[1]["pca_dims"] is None
    monkeypatch.setitem(P.DEFAULT_PCA_ABOVE, "umap", 100)          # 180 points: now above it
    assert project(X, "umap", return_info=True)[1]["pca_dims"] == 50


def test_preservation_searches_the_full_space_up_to_its_limit_then_after_pca(monkeypatch):
    import t3vis.analysis.projection as P

    rng = np.random.default_rng(4)
    X = np.hstack([rng.normal(size=(150, 3)) * 5, rng.normal(size=(150, 61))]).astype(np.float32)
    Y = project(X, "pca")
    full = neighborhood_preservation(X, Y, k=5, pca_dims=None)
    reduced = neighborhood_preservation(X, Y, k=5, pca_dims=50)
    assert not np.array_equal(full, reduced)          # the two spaces differ on this data
    np.testing.assert_array_equal(neighborhood_preservation(X, Y, k=5), full)
    monkeypatch.setattr(P, "PRESERVATION_FULL_UP_TO", 100)            # 150 points: above the limit
    np.testing.assert_array_equal(neighborhood_preservation(X, Y, k=5), reduced)


def test_tsne_finds_neighbours_exactly_on_small_inputs_and_the_caller_can_override(monkeypatch):
    import openTSNE

    from t3vis.analysis import _layouts

    seen = []

    class Spy(openTSNE.TSNE):
        def __init__(self, **kw):
            seen.append(kw.get("neighbors", "auto"))
            super().__init__(**kw)

    monkeypatch.setattr(openTSNE, "TSNE", Spy)
    X, _ = blobs(d=10)
    project(X, "tsne", n_iter=20)
    project(X, "tsne", n_iter=20, neighbors="annoy")
    monkeypatch.setattr(_layouts, "TSNE_EXACT_KNN_UP_TO", 100)           # 180 points: above it
    project(X, "tsne", n_iter=20)
    assert seen == ["exact", "annoy", "auto"]


def test_tsne_on_a_sample_places_the_rest_and_says_so():
    X, labels = blobs(n_per=100, d=10)
    Y, info = project(X, "tsne", max_fit=90, strata=labels, return_info=True)
    assert info["sampled"] == 90 and info["n"] == 300
    assert Y.shape == (300, 2) and np.isfinite(Y).all()
    centroids = np.stack([Y[labels == c].mean(axis=0) for c in range(3)])
    nearest = np.linalg.norm(Y[:, None] - centroids[None], axis=2).argmin(axis=1)
    assert (nearest == labels).mean() > 0.95             # placed points land in their own cluster


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_aligned_layouts_of_an_unchanging_run_stay_still(method):
    X = sheets()
    layouts = project_aligned([X, X, X], method)
    assert len(layouts) == 3 and all(Y.shape == (180, 2) and Y.dtype == np.float32 for Y in layouts)
    for a, b in itertools.pairwise(layouts):
        assert median_displacement(a, b) < 0.01
    # hidden states that move a little: the warm start + Procrustes keep the picture far stiller
    # than laying out each checkpoint on its own (measured: t-SNE 1.5% vs 9%, UMAP 6% vs 33%)
    rng = np.random.default_rng(1)
    moved = [X + rng.normal(scale=0.01 * X.std(), size=X.shape).astype(np.float32) for _ in range(2)]
    a, b = project_aligned(moved, method)
    limit = {"pca": 0.002, "tsne": 0.03, "umap": 0.1}[method]
    assert median_displacement(a, b) < limit
    if method != "pca":                                  # PCA is deterministic: alone == aligned
        # laid out on its own, a layout lands anywhere its seed takes it: the typical one of three seeds
        alone = np.median([median_displacement(procrustes_align(project(moved[0], method, seed=seed), b), b)
                           for seed in (5, 6, 7)])
        assert median_displacement(a, b) < 0.4 * alone


def test_procrustes_undoes_rotation_reflection_scale_and_translation():
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(50, 2))
    theta = 0.7
    R = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) @ np.diag([1.0, -1.0])
    moved = 3.5 * Y @ R + np.array([10.0, -4.0])
    np.testing.assert_allclose(procrustes_align(moved, Y), Y, atol=1e-5)


def test_aligned_pca_removes_the_flip_between_checkpoints():
    X, _ = blobs(d=8)
    flipped = -X                                          # same geometry, PCA comes out turned 180 degrees
    assert median_displacement(project(flipped), project(X)) > 0.1
    a, b = project_aligned([X, flipped], "pca")
    assert median_displacement(a, b) < 1e-5


def test_aligned_layouts_report_progress_once_per_checkpoint():
    X, _ = blobs(d=8)
    calls = []
    layouts = project_aligned([X, X + 0.1, X, X - 0.1], "pca", anchor=1, on_layout=lambda *a: calls.append(a))
    assert len(layouts) == 4 and calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_preservation_is_one_for_the_data_itself():
    X = np.random.default_rng(0).normal(size=(200, 2))
    np.testing.assert_array_equal(neighborhood_preservation(X, X, k=10, metric="euclidean"), np.ones(200))


def test_preservation_of_a_random_layout_is_low():
    X, _ = blobs(d=20)
    Y = np.random.default_rng(0).normal(size=(180, 2))
    score = neighborhood_preservation(X, Y, k=10)
    assert score.shape == (180,) and score.dtype == np.float32
    assert score.mean() < 0.15                           # chance is about k / N = 0.06


def test_preservation_on_a_hand_made_example():
    # points on a line; nearest neighbour (k=1) of each in X and in Y, worked out by hand:
    # X: p0->p1, p1->p0, p2->p1, p3->p2, p4->p3     Y: p0->p2, p1->p2, p2->p0, p3->p1, p4->p3
    X = np.array([[0.0, 0], [1, 0], [3, 0], [6.2, 0], [10, 0]])
    Y = np.array([[0.0, 0], [2.2, 0], [1, 0], [6, 0], [10, 0]])
    score = neighborhood_preservation(X, Y, k=1, metric="euclidean", pca_dims=None)
    np.testing.assert_array_equal(score, [0, 0, 0, 0, 1])
    score2 = neighborhood_preservation(X, Y, k=2, metric="euclidean", pca_dims=None)
    # k=2, X: p0{1,2} p1{0,2} p2{1,0} p3{2,4} p4{3,2}; Y: p0{2,1} p1{2,0} p2{0,1} p3{1,4} p4{3,1}
    np.testing.assert_allclose(score2, [1.0, 1.0, 1.0, 0.5, 0.5])


def test_bad_input_is_refused_with_the_fix():
    X, _ = blobs(d=4)
    with pytest.raises(InvalidInputError, match=r"unknown projection method 'mds'.*'pca', 'umap', 'tsne'"):
        project(X, "mds")
    with pytest.raises(InvalidInputError, match=r"unknown metric"):
        project(X, "pca", metric="manhattan")
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InvalidInputError, match=r"1 row\(s\) hold NaN"):
        project(bad, "pca")
    with pytest.raises(InvalidInputError, match=r"shape \(N, d\)"):
        project(X[0], "pca")
    with pytest.raises(InvalidInputError, match=r"same examples"):
        project_aligned([X, X[:-1]], "pca")
    with pytest.raises(InvalidInputError, match=r"bad parameter for tsne"):
        project(X, "tsne", no_such_option=1)
