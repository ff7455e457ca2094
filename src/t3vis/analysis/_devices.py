"""Where a layout runs: on a CUDA device when one is present (RAPIDS cuML if installed, else
t3vis's torch t-SNE and UMAP), on the CPU otherwise (openTSNE, umap-learn).

`T3VIS_PROJECTION_DEVICE` overrides the choice: "cpu" never uses a GPU, "cuda" / "cuda:1"
names the device. Deciding costs nothing on a machine without an NVIDIA driver: torch is
imported only where /dev/nvidiactl exists (its import alone takes seconds).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from functools import lru_cache

import numpy as np

ENV = "T3VIS_PROJECTION_DEVICE"
DRIVER_NODE = "/dev/nvidiactl"      # present wherever the NVIDIA driver is loaded
# the parameters each GPU layout understands; a layout asked for any other runs on the CPU
GPU_PARAMS = {"tsne": {"perplexity", "n_iter", "early_exaggeration_iter"},
              "umap": {"n_neighbors", "min_dist", "n_epochs", "learning_rate"}}
# openTSNE's early stop of a warm start (`_layouts.warm_start_params`): a GPU runs the whole
# schedule instead (an iteration costs it milliseconds), so it takes and drops these
CPU_ONLY_TSNE_PARAMS = {"callbacks", "callbacks_every_iters"}
# the GPU's t-SNE schedule: openTSNE's full one (exact gradients there cost milliseconds per iteration)
GPU_TSNE_SCHEDULE = {"early_exaggeration_iter": 250, "n_iter": 500}


def layout_device() -> str | None:
    """The CUDA device layouts run on ("cuda", "cuda:1"), or None for the CPU."""
    wanted = os.environ.get(ENV, "").strip()
    if wanted == "cpu":
        return None
    return _cuda_device(wanted or "cuda")


@lru_cache(maxsize=4)
def _cuda_device(name: str) -> str | None:
    if not os.path.exists(DRIVER_NODE) or importlib.util.find_spec("torch") is None:
        return None
    import torch

    return name if torch.cuda.is_available() else None


def backend_name(method: str, params: dict, *, warm: bool) -> str:
    """"cuml", "torch" or "cpu": what lays out `method` with `params` on this machine. cuML
    takes fresh layouts only: a warm start (`warm`, the aligned chain) runs on torch, which
    takes the previous layout as its start."""
    if method not in GPU_PARAMS or not set(_for_gpu(method, params)) <= GPU_PARAMS[method] or layout_device() is None:
        return "cpu"
    return "cuml" if not warm and importlib.util.find_spec("cuml") is not None else "torch"


def gpu_layout(backend: str, method: str, Z: np.ndarray, *, seed: int, init, n_jobs: int, params: dict) -> np.ndarray:
    """A layout (N, 2) of every row of Z on the GPU by `backend` ("cuml" or "torch"; see
    backend_name), called as `_layouts.tsne` and `_layouts.umap` are (n_jobs unused)."""
    params = _for_gpu(method, params)
    if backend == "cuml" and init is None:
        return _cuml_layout(method, Z, seed=seed, params=params)
    device = layout_device() or "cuda"
    if method == "tsne":
        from t3vis.analysis import _torch_tsne

        return _torch_tsne.tsne(Z, seed=seed, init=init, device=device, **{**GPU_TSNE_SCHEDULE, **params})
    from t3vis.analysis import _torch_umap

    return _torch_umap.umap(Z, seed=seed, init=init, device=device, **params)


def _for_gpu(method: str, params: dict) -> dict:
    return {k: v for k, v in params.items() if not (method == "tsne" and k in CPU_ONLY_TSNE_PARAMS)}


def _cuml_layout(method: str, Z: np.ndarray, *, seed: int, params: dict) -> np.ndarray:
    """cuML's TSNE or UMAP of every row, with the parameters GPU_PARAMS names."""
    import cuml

    if method == "tsne":
        schedule = {**GPU_TSNE_SCHEDULE, **params}
        # cuML counts the exaggerated iterations in its total, which it names max_iter since 24.x
        # (n_iter before; a cuML that knows only one refuses the other)
        total = "max_iter" if "max_iter" in inspect.signature(cuml.TSNE).parameters else "n_iter"
        estimator = cuml.TSNE(n_components=2, perplexity=params.get("perplexity", 30.0), random_state=seed,
                              exaggeration_iter=schedule["early_exaggeration_iter"],
                              **{total: schedule["early_exaggeration_iter"] + schedule["n_iter"]})
    else:
        estimator = cuml.UMAP(n_components=2, random_state=seed, **params)
    return np.asarray(estimator.fit_transform(Z), np.float64)
