"""The fast t-SNE keeps its quality, and umap-learn's compiled kernels outlive the process.

No timings here (those are bench/bench_projection.py's): properties that fail when the short
t-SNE schedule, its exact neighbour search or the numba cache breaks.
"""

import json
import os
import subprocess
import sys

import numpy as np
from layout_data import patches
from sklearn.manifold import TSNE
from sklearn.metrics.pairwise import cosine_distances
from sklearn.neighbors import NearestNeighbors

from t3vis.analysis import project
from t3vis.analysis._layouts import exact_neighbours


def tight_clusters(clusters=12, per=11, d=64, seed=0):
    """(clusters * per, d) float32 points in far-apart tight clusters, and their labels: each
    point's 10 nearest neighbours (cosine or euclidean) are exactly the rest of its cluster."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(clusters), per)
    X = rng.normal(size=(clusters, d))[labels] * 5 + rng.normal(scale=0.05, size=(len(labels), d))
    return X.astype(np.float32), labels


def kept_neighbours(X, Y, k=10):
    """Mean share of each point's k nearest neighbours by cosine in X that are among its k nearest in Y
    (scikit-learn's search, independent of t3vis's)."""
    high = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(X).kneighbors(X)[1][:, 1:]
    low = NearestNeighbors(n_neighbors=k + 1).fit(Y).kneighbors(Y)[1][:, 1:]
    return float(np.mean([len(set(h) & set(lo)) / k for h, lo in zip(high, low)]))


def test_tsne_keeps_the_neighbours_of_well_separated_clusters():
    X, labels = tight_clusters()
    Y = project(X, "tsne")
    near = NearestNeighbors(n_neighbors=11).fit(Y).kneighbors(Y)[1][:, 1:]      # (N, 10) in the layout
    same_cluster = (labels[near] == labels[:, None]).mean()
    assert same_cluster >= 0.9, f"only {same_cluster:.2f} of each point's layout neighbours share its cluster"


def test_tsne_keeps_nine_tenths_of_what_the_papers_tsne_keeps():
    X = patches(300, 6)
    ours = kept_neighbours(X, project(X, "tsne"))
    paper = TSNE(metric="precomputed", init="random", max_iter=2000, random_state=0).fit_transform(cosine_distances(X))
    theirs = kept_neighbours(X, paper)
    assert theirs > 0.2, f"the paper's t-SNE kept {theirs:.3f}: the data no longer test anything"
    assert ours >= 0.9 * theirs, f"project(tsne) kept {ours:.3f} of 10-NN, the paper's t-SNE {theirs:.3f}"


def test_tsne_is_deterministic_for_a_seed():
    X = patches(200, 6)
    a, b = project(X, "tsne", seed=3), project(X, "tsne", seed=3)
    assert np.array_equal(a, b)
    assert a.shape == (200, 2) and a.dtype == np.float32 and np.isfinite(a).all()


def test_exact_neighbours_match_scikit_learn():
    rng = np.random.default_rng(4)
    Z = rng.normal(size=(2500, 16)).astype(np.float32)          # more rows than one block of the search
    idx, dist = exact_neighbours(Z, 7)
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=8, algorithm="brute").fit(Z).kneighbors(Z)
    assert np.array_equal(idx, ref_idx[:, 1:])
    np.testing.assert_allclose(dist, ref_dist[:, 1:], rtol=1e-3, atol=1e-3)
    assert not (idx == np.arange(len(Z))[:, None]).any()


UMAP_IN_A_FRESH_PROCESS = """
import json, sys
import numpy as np
from t3vis.analysis import project
X = np.random.default_rng(0).normal(size=(120, 8)).astype(np.float32)
project(X, "umap")
import numba.core.registry as registry
kernels = [v for name, m in list(sys.modules.items()) if m is not None and name.split(".")[0] == "umap"
           for v in vars(m).values() if isinstance(v, registry.CPUDispatcher)]
print(json.dumps({"hits": sum(sum(k._cache_hits.values()) for k in kernels),
                  "misses": sum(sum(k._cache_misses.values()) for k in kernels)}))
"""


def test_umaps_kernels_are_cached_under_the_users_cache_folder_and_found_by_the_next_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)

    def fresh_process() -> dict:
        out = subprocess.run([sys.executable, "-c", UMAP_IN_A_FRESH_PROCESS], env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = fresh_process()
    folder = tmp_path / "t3vis" / "numba"
    cached = list(folder.rglob("*.nbi"))
    assert first["misses"] > 0 and first["hits"] == 0, first
    assert len(cached) >= 5, f"umap's kernels were not written to {folder}: {cached}"
    second = fresh_process()
    # a few kernels numba cannot cache (it warns) compile in every process; the rest must load
    # (on 120 points, with the neighbours given, umap compiles 8 kernels: 4 load, 3 cannot be cached)
    assert second["hits"] >= 4 and second["misses"] < first["misses"], (first, second)
