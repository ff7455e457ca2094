"""Large projections: fitted on a seeded sample, the rest placed among it; PCA's axes from a
sample; neighbourhood preservation estimated on a sample of points.

The data are small (a few thousand points) with the thresholds lowered where needed, so that the
large-input paths run in seconds. No timings (bench/bench_projection.py has them). Expected
values come from independent computations: the blobs' known labels, scikit-learn's PCA and the
exact preservation of every point.
"""

from __future__ import annotations

import numpy as np
import pytest
from layout_data import patches
from sklearn.decomposition import PCA

from t3vis.analysis import _layouts as L
from t3vis.analysis import projection as P
from t3vis.analysis.projection import neighborhood_preservation, project


def blobs(n=3000, clusters=5, d=20, seed=0):
    """(n, d) float32 points in well-separated Gaussian clusters, and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, clusters, n)
    centres = rng.normal(size=(clusters, d)) * 6
    X = centres[labels] + rng.normal(size=(n, d))
    return X.astype(np.float32), labels


def nearest_other(points):
    """Each point's distance to its nearest other point (m,)."""
    d = np.linalg.norm(points[:, None] - points[None], axis=2)
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


def fitted_rows(n, max_fit, seed=0):
    """The rows `project` fits on (its documented seeded sample), found independently of the layout."""
    return np.sort(np.random.default_rng(seed).choice(n, size=max_fit, replace=False))


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_a_layout_fitted_on_a_sample_keeps_clusters_apart_and_places_the_rest_among_its_own(method):
    X, labels = blobs()
    Y, info = project(X, method, max_fit=600, return_info=True)
    assert info["sampled"] == 600 and info["n"] == 3000
    assert Y.shape == (3000, 2) and Y.dtype == np.float32 and np.isfinite(Y).all()
    fit = fitted_rows(3000, 600)
    placed = np.setdiff1d(np.arange(3000), fit)
    # clusters apart: every cluster's points lie nearer their own centroid than any other's
    centroids = np.stack([Y[labels == c].mean(axis=0) for c in range(5)])
    nearest_centroid = np.linalg.norm(Y[:, None] - centroids[None], axis=2).argmin(axis=1)
    assert (nearest_centroid == labels).mean() > 0.99
    # placed points land among their own cluster's fitted points: the nearest fitted point is of
    # their cluster, and it is no farther than the typical spacing of fitted points in a cluster
    d = np.linalg.norm(Y[placed][:, None] - Y[fit][None], axis=2)                     # (placed, fitted)
    nearest_fitted = d.argmin(axis=1)
    assert (labels[fit][nearest_fitted] == labels[placed]).mean() > 0.99
    spacing = np.median(np.concatenate([nearest_other(Y[fit][labels[fit] == c]) for c in range(5)]))
    assert np.median(d.min(axis=1)) <= 2 * spacing


def test_a_sampled_layout_is_deterministic_under_a_seed_and_its_sample_follows_the_seed():
    X, _ = blobs(n=1500)
    a = project(X, "tsne", max_fit=400, seed=3)
    b = project(X, "tsne", max_fit=400, seed=3)
    assert np.array_equal(a, b)
    c = project(X, "tsne", max_fit=400, seed=4)
    assert not np.array_equal(a, c)


def test_placing_by_the_index_agrees_with_placing_by_exact_search(monkeypatch):
    X, _ = blobs(n=4000, d=50)
    Z = P.prepare(X)
    fit = fitted_rows(4000, 1000)
    Y_fit = project(X[fit], "pca")                         # any fixed layout of the fitted rows
    exact = L.place(Z, fit, Y_fit)
    monkeypatch.setattr(L, "PLACE_EXACT_PAIRS", 0)       # the pynndescent path
    approximate = L.place(Z, fit, Y_fit)
    again = L.place(Z, fit, Y_fit)
    assert np.array_equal(approximate, again)             # seeded, one thread
    np.testing.assert_array_equal(approximate[fit], exact[fit])
    extent = np.ptp(exact, axis=0).max()
    moved = np.linalg.norm(approximate - exact, axis=1)
    assert np.median(moved) < 1e-3 * extent and np.quantile(moved, 0.95) < 0.02 * extent


def test_a_placed_copy_of_a_fitted_point_sits_on_it():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(50, 8)).astype(np.float32)
    Z[40:] = Z[:10]                                       # rows 40-49 copy rows 0-9
    fit = np.arange(40)
    Y_fit = rng.normal(size=(40, 2))
    Y = L.place(Z, fit, Y_fit)
    np.testing.assert_array_equal(Y[fit], Y_fit)
    extent = np.ptp(Y_fit, axis=0).max()                  # a copy's distance is ~1e-4, not 0, in float32
    assert np.abs(Y[40:] - Y_fit[:10]).max() < 1e-2 * extent


def test_pca_of_a_large_input_takes_its_axes_from_a_sample_and_scores_by_blocks(monkeypatch):
    rng = np.random.default_rng(0)                        # three clear axes (spreads 10, 6, 3), then noise
    spreads = np.array([10.0, 6.0, 3.0] + [1.0] * 37)
    rotation = np.linalg.qr(rng.normal(size=(40, 40)))[0]
    X = ((rng.normal(size=(6000, 40)) * spreads) @ rotation).astype(np.float32)
    exact = P.pca(X, 3)
    monkeypatch.setattr(P, "PCA_AXES_FROM", 2000)
    monkeypatch.setattr(P, "PCA_BLOCK_ROWS", 700)
    sampled = P.pca(X, 3)
    reference = PCA(3, svd_solver="full").fit_transform(X)          # scikit-learn, every row
    assert sampled.shape == (6000, 3) and sampled.dtype == np.float32
    for j in range(3):                                    # the same scores, up to sign
        assert abs(np.corrcoef(sampled[:, j], reference[:, j])[0, 1]) > 0.99
        assert abs(np.corrcoef(exact[:, j], reference[:, j])[0, 1]) > 0.9999
    assert np.array_equal(P.pca(X, 3), sampled)           # the sample is seeded


def test_estimated_preservation_measures_a_seeded_sample_exactly_and_its_mean_is_close():
    X = patches(5000, 8)
    Y = project(X, "pca")
    exact = neighborhood_preservation(X, Y, k=10, sample=None)
    estimate = neighborhood_preservation(X, Y, k=10, sample=1000, seed=0)
    measured = np.isfinite(estimate)
    assert measured.sum() == 1000 and np.isfinite(exact).all()
    # the sampled points' values are the exact ones (the same search, among all points)
    assert (estimate[measured] == exact[measured]).mean() >= 0.99
    # the sample mean is within 0.02 of the mean over every point; 0.02 is more than four
    # standard errors of a 1,000-point mean here, so a correct estimate fails it rarely
    standard_error = exact.std() / np.sqrt(1000)
    assert 4 * standard_error < 0.02
    assert abs(np.nanmean(estimate) - exact.mean()) <= 0.02
    assert np.array_equal(estimate, neighborhood_preservation(X, Y, k=10, sample=1000, seed=0), equal_nan=True)


def test_preservation_is_estimated_by_default_only_above_its_limit(monkeypatch):
    X = patches(1200, 8)
    Y = project(X, "pca")
    assert np.isfinite(neighborhood_preservation(X, Y)).all()
    monkeypatch.setattr(P, "PRESERVATION_EXACT_UP_TO", 1000)
    monkeypatch.setattr(P, "PRESERVATION_SAMPLE", 300)
    estimate = neighborhood_preservation(X, Y)
    assert np.isfinite(estimate).sum() == 300
    with pytest.raises(P.InvalidInputError, match="sample"):
        neighborhood_preservation(X, Y, sample=0)


def test_a_warm_started_tsne_stops_once_settled():
    settled = L.Settled(0.01)
    assert settled(20, 2.0, None) is False                # the first check has nothing to compare with
    assert settled(40, 1.5, None) is False                # gained 0.5: a third of 1.5
    assert settled(60, 1.495, None) is True               # gained 0.005: under 1% of 1.495
    # the caller's own schedule replaces the early stop
    assert "callbacks" not in L.warm_start_params("tsne", {"n_iter": 300})
    assert isinstance(L.warm_start_params("tsne", {})["callbacks"], L.Settled)


def test_the_service_averages_the_preservation_it_measured():
    from t3vis.server.projections import Projections

    layout = np.zeros((4, 2), np.float32)
    preservation = np.array([0.5, np.nan, 0.25, np.nan], np.float32)
    result = Projections(background=False)._store(("run", "key"), "tsne", layout, preservation)
    assert result.mean_preservation == pytest.approx(0.375)
    column = np.frombuffer(result.data, "<f4").reshape(4, 3)[:, 2]
    assert np.isnan(column[[1, 3]]).all() and np.array_equal(column[[0, 2]], [0.5, 0.25])


def test_pca_of_the_raw_rows_equals_pca_of_the_prepared_copy_without_making_it(monkeypatch):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(1000, 30)).astype(np.float16)           # a float16 store, as hidden states are kept
    for name in ("PCA_AXES_FROM", "PCA_BLOCK_ROWS", "PREPARE_BLOCK_ROWS"):
        monkeypatch.setattr(P, name, 300)                         # 1,000 rows: above, in 4 blocks (the last of 100)
    for metric, k in (("cosine", 5), ("euclidean", 40)):          # 40 > 30 dims: zero-padded, as pca's
        np.testing.assert_array_equal(P.prepared_pca(X, k, metric), P.pca(P.prepare(X, metric), k))
    X[700, 3] = np.inf
    with pytest.raises(P.InvalidInputError, match="1 row"):
        P.prepared_pca(X, 5)
