"""The GPU layouts (torch t-SNE and UMAP), run here on the CPU: their pieces against the papers'
formulas and umap-learn's own functions, their layouts against openTSNE's and umap-learn's."""

import math
import subprocess
import sys
from typing import ClassVar

import numpy as np
import pytest
import torch

from t3vis.analysis import _devices, _torch_tsne, _torch_umap
from t3vis.analysis.projection import neighborhood_preservation, prepare


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These layouts are for a GPU; on a shared 2-core CPU, two torch threads contend (20x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blobs(n_per: int = 150, centres: int = 4, dims: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    middles = rng.normal(0, 6, (centres, dims))
    X = np.concatenate([m + rng.normal(0, 1, (n_per, dims)) for m in middles]).astype(np.float32)
    return X, np.repeat(np.arange(centres), n_per)


def nearest_label_accuracy(Y, labels, k: int = 5) -> float:
    """The share of points whose k nearest layout neighbours mostly share their label."""
    d = ((Y[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    near = np.argsort(d, axis=1)[:, :k]
    return float(((labels[near] == labels[:, None]).mean(1) > 0.5).mean())


def test_each_points_affinities_have_the_asked_perplexity():
    X, _ = blobs()
    fit = torch.as_tensor(prepare(X))
    _, d2 = _torch_tsne.nearest(fit, fit, 90, exclude_self=True)
    p = _torch_tsne._conditional(d2, 30.0).double()
    perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-300))).sum(1))      # exp(Shannon entropy)
    assert torch.allclose(p.sum(1), torch.ones(len(p), dtype=torch.float64), atol=1e-5)
    assert torch.allclose(perplexity, torch.full_like(perplexity, 30.0), rtol=1e-3)


def test_neighbours_are_the_exact_nearest_others():
    X, _ = blobs(n_per=40)
    fit = torch.as_tensor(X)
    near, d2 = _torch_tsne.nearest(fit, fit, 7, exclude_self=True)
    full = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(full, np.inf)
    expected = np.argsort(full, axis=1)[:, :7]
    assert (near.numpy() == expected).mean() > 0.999            # ties in float32 may swap a pair
    np.testing.assert_allclose(d2.numpy(), np.take_along_axis(full, expected, 1), rtol=1e-3, atol=1e-3)


def test_the_gradient_is_the_gradient_of_the_kl_divergence():
    """Against autograd of KL(P || Q) written densely from the definition (van der Maaten 2008)."""
    rng = np.random.default_rng(1)
    X, _ = blobs(n_per=15)
    fit = torch.as_tensor(prepare(X))
    near, d2 = _torch_tsne.nearest(fit, fit, 12, exclude_self=True)
    i, j, p = _torch_tsne._joint_affinities(near, _torch_tsne._conditional(d2, 4.0))
    P = torch.zeros(len(fit), len(fit), dtype=torch.float64).index_put_((i, j), p.double(), accumulate=True)
    Y = torch.tensor(rng.normal(0, 1, (len(fit), 2)), dtype=torch.float64, requires_grad=True)
    w = 1.0 / (1.0 + torch.cdist(Y, Y) ** 2)
    w = w * (1 - torch.eye(len(Y), dtype=torch.float64))
    Q = w / w.sum()
    mask = P > 0
    kl = (P[mask] * torch.log(P[mask] / Q[mask])).sum()
    (expected,) = torch.autograd.grad(kl, Y)
    assert math.isclose(float(P.sum()), 1.0, rel_tol=1e-5)
    got = _torch_tsne._gradient(Y.detach().float(), i, j, p)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-3, atol=1e-6)


def test_torch_tsne_separates_blobs_and_keeps_neighbourhoods_as_opentsne_does():
    from openTSNE import TSNE

    X, labels = blobs()
    Z = prepare(X)
    ours = _torch_tsne.tsne(Z, seed=0, init=None, device="cpu", n_iter=250,
                            early_exaggeration_iter=100)
    reference = np.asarray(TSNE(random_state=0, n_jobs=1).fit(Z))
    assert nearest_label_accuracy(ours, labels) == 1.0
    ours_kept = neighborhood_preservation(X, ours).mean()
    assert ours_kept >= 0.9 * neighborhood_preservation(X, reference).mean()
    again = _torch_tsne.tsne(Z, seed=0, init=None, device="cpu", n_iter=250,
                             early_exaggeration_iter=100)
    np.testing.assert_array_equal(ours, again)


def test_umap_curve_and_fuzzy_graph_are_umap_learns():
    from scipy.sparse import coo_matrix
    from umap.umap_ import find_ab_params, fuzzy_simplicial_set

    np.testing.assert_allclose(_torch_umap.curve_parameters(1.0, 0.1), find_ab_params(1.0, 0.1), rtol=1e-4)
    X, _ = blobs(n_per=30)
    Z = prepare(X)
    fit = torch.as_tensor(Z)
    near, d2 = _torch_tsne.nearest(fit, fit, 9, exclude_self=True)
    head, tail, weight = _torch_umap._fuzzy_graph(near, d2.sqrt(), 10)
    ours = coo_matrix((weight.numpy(), (head.numpy(), tail.numpy())), shape=(len(Z), len(Z))).toarray()
    # umap-learn's neighbour lists start with the point itself at distance 0
    knn = np.concatenate([np.arange(len(Z))[:, None], near.numpy()], 1)
    knn_d = np.concatenate([np.zeros((len(Z), 1)), d2.sqrt().numpy()], 1).astype(np.float32)
    graph, _, _ = fuzzy_simplicial_set(Z, 10, 0, "euclidean", knn_indices=knn, knn_dists=knn_d)
    np.testing.assert_allclose(ours, graph.toarray(), atol=2e-4)


def test_torch_umap_separates_blobs_and_keeps_neighbourhoods_as_umap_learn_does():
    from t3vis.analysis._layouts import import_umap

    X, labels = blobs()
    Z = prepare(X)
    ours = _torch_umap.umap(Z, seed=0, init=None, device="cpu", n_epochs=200)
    reference = import_umap().UMAP(n_neighbors=10, random_state=0, n_jobs=1).fit_transform(Z)
    assert nearest_label_accuracy(ours, labels) == 1.0
    assert neighborhood_preservation(X, ours).mean() >= 0.9 * neighborhood_preservation(X, reference).mean()


def test_a_warm_start_keeps_an_unchanged_layout_in_place():
    """The aligned chain starts each checkpoint from the one before: unchanged states stay put."""
    X, _ = blobs()
    Z = prepare(X)
    first = _torch_umap.umap(Z, seed=0, init=None, device="cpu", n_epochs=200)
    again = _torch_umap.umap(Z, seed=1, init=first, device="cpu", n_epochs=200, learning_rate=0.1)
    scale = np.ptp(first, axis=0).max()
    moved = np.linalg.norm((again - again.mean(0)) * (np.abs(first).max() / np.abs(again).max())
                           - (first - first.mean(0)), axis=1)
    assert np.median(moved) < 0.05 * scale


def test_without_an_nvidia_driver_layouts_stay_on_the_cpu_and_torch_is_not_imported(tmp_path):
    code = (f"import sys; from t3vis.analysis import _devices; _devices.DRIVER_NODE = {str(tmp_path / 'none')!r}; "
            "print(_devices.layout_device(), _devices.backend_name('tsne', {}, warm=False), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["None", "cpu", "False"]


def test_the_environment_keeps_layouts_on_the_cpu_and_odd_parameters_stay_there(monkeypatch):
    monkeypatch.setattr(_devices, "_cuda_device", lambda name: name)          # as if a GPU were present
    assert _devices.backend_name("tsne", {"perplexity": 5}, warm=True) == "torch"
    assert _devices.backend_name("tsne", {"theta": 0.5}, warm=False) == "cpu"      # openTSNE's own knob
    assert _devices.backend_name("pca", {}, warm=False) == "cpu"
    # a warm start's openTSNE early stop is dropped on a GPU, which runs the whole schedule
    from t3vis.analysis._layouts import warm_start_params
    assert _devices.backend_name("tsne", warm_start_params("tsne", {}), warm=True) == "torch"
    monkeypatch.setenv(_devices.ENV, "cpu")
    assert _devices.backend_name("umap", {}, warm=False) == "cpu"


def test_with_a_device_project_lays_out_on_it_and_caches_apart(monkeypatch):
    """project() on a machine with a GPU: the torch layouts (here on the CPU, standing in for
    CUDA), the whole chain of project() around them (sampling and placing) unchanged."""
    from t3vis.analysis import _layouts
    from t3vis.analysis.projection import layout_rules, project

    X, labels = blobs(n_per=60)
    cpu_rules = layout_rules("umap")
    monkeypatch.setattr(_devices, "layout_device", lambda: "cpu")
    Y, info = project(X, "umap", n_epochs=100, max_fit=150, return_info=True)
    assert info["sampled"] == 150
    fit_rows = np.sort(np.random.default_rng(0).choice(len(X), size=150, replace=False))    # the seeded sample
    expected_fit = _torch_umap.umap(prepare(X)[fit_rows], seed=0, init=None, device="cpu", n_epochs=100)
    np.testing.assert_allclose(Y, _layouts.place(prepare(X), fit_rows, expected_fit).astype(np.float32),
                               rtol=1e-5, atol=1e-5)
    assert nearest_label_accuracy(Y, labels) == 1.0
    assert layout_rules("umap")["device"] == "gpu" and cpu_rules["device"] == "cpu"
    assert layout_rules("pca")["device"] == "cpu"


def test_with_a_device_the_aligned_chain_starts_the_torch_tsne_from_the_previous_layout(monkeypatch):
    from t3vis.analysis.projection import align_next

    X, labels = blobs(n_per=50)
    X2 = X + np.random.default_rng(3).normal(0, 0.3, X.shape).astype(np.float32)
    first = _torch_tsne.tsne(prepare(X), seed=0, init=None, device="cpu", n_iter=150)
    starts = []
    real = _torch_tsne.tsne

    def recording(Z, **kw):
        starts.append(kw["init"])
        return real(Z, **kw)

    monkeypatch.setattr(_devices, "layout_device", lambda: "cpu")
    monkeypatch.setattr(_torch_tsne, "tsne", recording)
    Y = align_next(X2, X, first, "tsne", n_iter=100)
    assert len(starts) == 1 and np.array_equal(starts[0], first)
    assert nearest_label_accuracy(Y, labels) == 1.0


class _CumlTSNE:
    """cuml.manifold.TSNE's keyword arguments as cuML 25.x documents them (max_iter, no n_iter)."""
    calls: ClassVar[list[dict]] = []

    def __init__(self, *, n_components=2, perplexity=30.0, max_iter=1000, exaggeration_iter=250,
                 random_state=None, method="fft"):
        self.calls.append({"perplexity": perplexity, "max_iter": max_iter, "exaggeration_iter": exaggeration_iter,
                           "random_state": random_state})

    def fit_transform(self, Z):
        return np.arange(2 * len(Z), dtype=np.float32).reshape(-1, 2)


class _OldCumlTSNE(_CumlTSNE):
    """The same before cuML renamed n_iter to max_iter."""

    def __init__(self, *, n_components=2, perplexity=30.0, n_iter=1000, exaggeration_iter=250, random_state=None):
        self.calls.append({"perplexity": perplexity, "n_iter": n_iter, "exaggeration_iter": exaggeration_iter,
                           "random_state": random_state})


@pytest.mark.parametrize("estimator, total", [(_CumlTSNE, "max_iter"), (_OldCumlTSNE, "n_iter")])
def test_with_cuml_installed_a_fresh_tsne_runs_the_whole_schedule_under_the_name_its_version_takes(
        monkeypatch, estimator, total):
    import importlib.machinery
    import types

    cuml = types.ModuleType("cuml")
    cuml.__spec__ = importlib.machinery.ModuleSpec("cuml", None)
    cuml.TSNE = estimator
    monkeypatch.setitem(sys.modules, "cuml", cuml)
    monkeypatch.setattr(_devices, "layout_device", lambda: "cuda")
    estimator.calls = []
    assert _devices.backend_name("tsne", {"perplexity": 20.0}, warm=False) == "cuml"
    assert _devices.backend_name("tsne", {}, warm=True) == "torch"      # warm starts: torch takes the start
    Z = np.zeros((5, 3), np.float32)
    Y = _devices.gpu_layout("cuml", "tsne", Z, seed=7, init=None, n_jobs=1, params={"perplexity": 20.0})
    # openTSNE's whole schedule: 250 exaggerated iterations, then 500, which cuML counts as one total
    assert estimator.calls == [{"perplexity": 20.0, total: 750, "exaggeration_iter": 250, "random_state": 7}]
    assert Y.dtype == np.float64 and Y.shape == (5, 2) and Y[4, 1] == 9.0
