"""Projection time and quality against the paper's t-SNE, in the same process.

Baseline (the T3-Vis paper's method): scikit-learn TSNE on a precomputed cosine distance matrix,
2,000 iterations (`max_iter`), random init; its time includes the distance matrix. Measured:
`t3vis.analysis.project(X, "tsne")` and `project(X, "umap")` on the same points (timed after a
warm-up call on 200 points, which pays the imports and umap-learn's numba kernels). Quality:
mean neighbourhood preservation (k=10, cosine, exact in the full space) of every layout.
Then: umap's first call in a fresh process (a subprocess), with an empty numba cache and with
the one that call filled (`_layouts.import_umap`); the first aligned ("previous") projection of
a new layer over 5 checkpoints, made as server/projections.py makes it (the first checkpoint
laid out, each later one by `align_next` from the one before, then the preservation of the
last); then the time to project N_BIG points with each method named in T3VIS_BENCH_PROJ_BIG_METHODS.

Points: the demo run's own hidden states (runs/demo, or T3VIS_BENCH_RUN: last checkpoint, last
layer, every probed example: 2,000 real states after `make demo`). Only where no run is
recorded does it fall back to synthetic clustered 384-dim data (T3VIS_BENCH_PROJ_N points, 20
clusters, each a 10-dim patch); the output and the result rows name the source used. The
5-checkpoint chain takes the run's last 5 checkpoints; a run with fewer (the demo while it
records) lends its last checkpoint's last 5 layers, real states that change from one to the
next. The N_BIG scale check needs more states than any run holds, so it is synthetic either
way: the run's states repeated with noise (10% of each dimension's spread), else the synthetic set.

Targets (issue 15): t-SNE at least 10x faster than the paper's at 0.9x its preservation; UMAP
keeps its older floor (2.2x, 0.58x); umap's first call in a fresh process, numba cache filled,
at most 5 s over a compiled call; the first aligned t-SNE projection of 5 x 2,000 states within
5 s. Measured on runs/demo (`t3vis demo` recording, 2,000 states, 384 dims), 2 cores shared with
other jobs, `T3VIS_BENCH_REPEATS=2 T3VIS_BENCH_PROJ_BIG_METHODS=none`, two runs:
- 07:04 UTC, step 62, load 9-12: paper 118.0 s (fastest of 192.9 / 118.0), t-SNE 5.2 s, UMAP
  10.6 s: t-SNE 22.7x at 0.972x, UMAP 11.1x at 0.671x. umap's first call in a fresh process
  54.6 s with an empty cache (a compiled call: 8.2 s), 12.2 s with the cache filled (8.8 s).
- 07:14 UTC, step 0, load 11-13: paper 110.1 s (206.3 s in the other round; preservation 0.211),
  t-SNE 4.1 s (0.204), UMAP 8.4 s (0.150): t-SNE 26.7x at 0.966x, UMAP 13.0x at 0.712x.
  umap first call 75.0 s with an empty cache, 12.7 s with it filled (4.4 s over a compiled call).
  5-checkpoint chain (step 16, layers 2-6): t-SNE 10.1 s (4.5-5.0 s of CPU), UMAP 33.4 s; PCA
  0.7 s (since BLAS runs on one thread for inputs this small: 11.5-14.5 s before).
On this loaded machine the chain's wall time is twice its CPU time, so the 5 s target MISSes
here; its CPU time (one thread) says what a quiet machine would take: about 4.5-5 s. Before
this work (openTSNE's 250 + 500 iterations after PCA to 50 dimensions, two threads), t-SNE ran
4.8x at 0.86x and umap's first call compiled for 13 s or more on a quiet machine. Each
target can miss: a longer schedule, a second thread under load or a lost exact neighbour
search takes t-SNE under 10x; fewer iterations, a wrong metric or PCA before the neighbour
search take it under 0.9x; numba kernels no longer cached put the first call 20-60 s over.

    .venv/bin/python bench/bench_projection.py

Environment: T3VIS_BENCH_RUN (runs/demo), T3VIS_BENCH_REPEATS (3 timed runs of each; the fastest
counts), T3VIS_BENCH_PROJ_N (2000, synthetic fallback only),
T3VIS_BENCH_PROJ_BIG (100000), T3VIS_BENCH_PROJ_BIG_METHODS ("umap,tsne"; "none" skips the scale check),
T3VIS_BENCH_PROJ_CHAIN_METHODS ("pca,tsne,umap"; "none" skips the 5-checkpoint chain).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

# method -> (paper time / our time, our preservation / paper's preservation), both ">="
TARGETS = {"tsne": (10.0, 0.9), "umap": (2.2, 0.58)}
CACHED_FIRST_CALL_EXTRA_S = 5.0   # umap's first call in a fresh process, cache filled: at most this over a later one
CHAIN_CHECKPOINTS = 5
CHAIN_TARGET_S = 5.0         # the first aligned ("previous") projection of a new layer over 5 checkpoints
CHAIN_TARGET_METHODS = ("tsne",)    # the fast method carries the target; the others are reported
BIG_TARGET_S = 60.0          # DESIGN.md: 100,000 points on 2 cores in about a minute
K = 10
NOISE = 0.1                  # scale-check copies: noise as a share of each dimension's spread


def run_states(run_dir: Path):
    """(N, d) float32 last-layer states of the run's last checkpoint, and a description."""
    import numpy as np

    import t3vis

    ck = t3vis.open_run(run_dir).checkpoints[-1]
    layer = ck.hidden_states.shape[0] - 1
    X = np.asarray(ck.hidden(layer), np.float32)                              # (N, d)
    return X, f"real: {run_dir} step {ck.step} layer {layer} ({len(X)} states)"


def synthetic_states(n: int, seed: int = 0):
    """(n, 384) float32 clustered points, and a description."""
    import numpy as np

    rng = np.random.default_rng(seed)
    d, clusters = 384, 20
    centers = rng.normal(size=(clusters, d)) * 2
    bases = rng.normal(size=(clusters, 10, d)) * 0.5
    label = rng.integers(0, clusters, n)
    X = centers[label] + np.einsum("nk,nkd->nd", rng.normal(size=(n, 10)), bases[label])
    return X.astype(np.float32), f"synthetic: {n} points, {clusters} clusters of 10-dim patches in {d} dims"


def noisy_copies(base, n: int, seed: int = 1):
    """n rows: every row of base once, then random rows of it with noise (a scale check only)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = np.concatenate([np.arange(len(base)), rng.integers(0, len(base), max(0, n - len(base)))])[:n]
    X = base[rows]
    extra = np.arange(n) >= len(base)                                         # copies get noise, originals not
    noise = rng.normal(scale=NOISE, size=(int(extra.sum()), X.shape[1])).astype(np.float32)
    X[extra] += noise * base.std(axis=0)
    return X


def paper_tsne(X):
    from sklearn.manifold import TSNE
    from sklearn.metrics.pairwise import cosine_distances

    D = cosine_distances(X)                                                   # (N, N) float32
    return TSNE(metric="precomputed", init="random", max_iter=2000, random_state=0).fit_transform(D)


def time_layouts(X, repeats: int) -> tuple[dict, dict, dict]:
    """Layouts, and the fastest of `repeats` wall and CPU seconds, of the paper's t-SNE and of
    project(tsne|umap) on X. Runs are interleaved in rotating order, and the fastest run counts:
    on 2 shared cores one run of the same call took 10 s or 44 s (OpenMP threads stall when a
    neighbour holds a core), so a single run's ratio says more about the neighbours than the code."""
    from t3vis.analysis import project

    runs = {"paper": lambda: paper_tsne(X), "tsne": lambda: project(X, "tsne"), "umap": lambda: project(X, "umap")}
    names = list(runs)
    layouts: dict = {}
    wall: dict = {name: [] for name in names}
    cpu: dict = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:

            def call(name=name):           # bound per iteration: each call keeps its own layout
                layouts[name] = runs[name]()

            w, c = C.timed(call)
            wall[name].append(w)
            cpu[name].append(c)
        print(f"[projection] round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in wall.items()), flush=True)
    return layouts, wall, cpu


def quality_rows(X, source: str, repeats: int) -> list[dict]:
    from t3vis.analysis import neighborhood_preservation, project

    n = len(X)
    project(X[:200], "tsne")                                                   # import, not timed
    project(X[:200], "umap")                                                   # compiled (or loaded from cache)
    layouts, runs_wall, runs_cpu = time_layouts(X, repeats)
    wall = {name: min(times) for name, times in runs_wall.items()}
    cpu = {name: min(times) for name, times in runs_cpu.items()}
    quality = {name: float(neighborhood_preservation(X, Y, k=K, pca_dims=None).mean()) for name, Y in layouts.items()}

    settings = {"n": n, "d": int(X.shape[1]), "source": source, "k": K, "repeats": repeats, "loadavg": C.loadavg(),
                "runs_wall_s": runs_wall, "runs_cpu_s": runs_cpu, "preservation": quality}
    rows = [C.result("projection", f"paper t-SNE (sklearn, cosine, 2000 it), {n} pts, fastest", wall["paper"], "s",
                     detail=settings),
            C.result("projection", f"preservation@{K} paper t-SNE, {n} pts", quality["paper"], "")]
    for name, (speed_target, quality_target) in TARGETS.items():
        speed, kept = wall["paper"] / wall[name], quality[name] / quality["paper"]
        print(f"[projection] {name} vs paper t-SNE on {source}: {speed:.2f}x speed (target >= {speed_target}), "
              f"{kept:.3f}x preservation (target >= {quality_target})", flush=True)
        rows += [C.result("projection", f"project {name}, {n} pts, fastest", wall[name], "s"),
                 C.result("projection", f"paper / project {name} time (wall, fastest of each)", speed, "x",
                          target=speed_target, op=">=",
                          detail={"cpu_ratio": cpu["paper"] / cpu[name], "source": source}),
                 C.result("projection", f"preservation@{K} project {name}, {n} pts", quality[name], ""),
                 C.result("projection", f"preservation@{K} {name} / paper t-SNE", kept, "x", target=quality_target,
                          op=">=", detail={"source": source})]
    return rows


def scale_rows(Xb, source: str, methods: list[str]) -> list[dict]:
    from t3vis.analysis import project

    n_big = len(Xb)
    if "umap" in methods:       # nearest-neighbour descent (from 4,096 points up) compiles on its first call
        project(Xb[:5000], "umap")
    rows = []
    for method in methods:
        found: dict = {}

        def call(method=method, found=found):      # bound per iteration
            found["info"] = project(Xb, method, return_info=True)[1]

        w, c = C.timed(call)
        info = found["info"]
        print(f"[projection] {method} on {n_big}: {w:.1f}s (fitted on {info['sampled'] or n_big})", flush=True)
        rows.append(C.result("projection", f"project {method}, {n_big} pts", w, "s", target=BIG_TARGET_S,
                             detail={"cpu_s": c, "source": source, "sampled": info["sampled"],
                                     "pca_dims": info["pca_dims"], "loadavg": C.loadavg()}))
    return rows


FIRST_CALL = """
import json, sys, time
import numpy as np
X = np.load(sys.argv[1])
t0 = time.perf_counter()
from t3vis.analysis import project
project(X, "umap")
t1 = time.perf_counter()
project(X, "umap")
print(json.dumps({"first_s": t1 - t0, "second_s": time.perf_counter() - t1}))
"""


def first_call_rows(X) -> list[dict]:
    """umap's first call in a fresh process (import, numba, layout), with an empty numba cache
    and then with the one that call filled; each process also times a second call, compiled."""
    import json
    import subprocess
    import tempfile

    import numpy as np

    n = len(X)
    with tempfile.TemporaryDirectory(prefix="t3vis-bench-numba-") as tmp:
        states = Path(tmp) / "states.npy"
        np.save(states, X)
        env = {**os.environ, "NUMBA_CACHE_DIR": str(Path(tmp) / "numba")}
        found = {}
        for cache in ("empty", "filled"):
            out = subprocess.run([sys.executable, "-c", FIRST_CALL, str(states)], env=env, capture_output=True,
                                 text=True, check=True).stdout
            found[cache] = json.loads(out.strip().splitlines()[-1])
            cached_files = sum(1 for _ in (Path(tmp) / "numba").rglob("*.nbi"))
            print(f"[projection] umap in a fresh process, numba cache {cache}: "
                  f"first call {found[cache]['first_s']:.1f}s, second {found[cache]['second_s']:.1f}s "
                  f"({cached_files} kernels cached)", flush=True)
    extra = found["filled"]["first_s"] - found["filled"]["second_s"]
    return [C.result("projection", f"umap first call in a fresh process, empty numba cache, {n} pts",
                     found["empty"]["first_s"], "s", detail={**found["empty"], "loadavg": C.loadavg()}),
            C.result("projection", f"umap first call in a fresh process, numba cache filled, {n} pts",
                     found["filled"]["first_s"], "s", detail=found["filled"]),
            C.result("projection", "umap first call over a compiled one, numba cache filled", extra, "s",
                     target=CACHED_FIRST_CALL_EXTRA_S, detail={"loadavg": C.loadavg()})]


def chain_states(run_dir: Path | None, X):
    """CHAIN_CHECKPOINTS arrays of the same examples, and a description: the run's last
    checkpoints' last layer where it holds enough of them (same examples), else the last
    checkpoint's last CHAIN_CHECKPOINTS layers, real states that change from one to the next
    as a layer's do across training, else X drifting with noise."""
    import numpy as np

    import t3vis

    if run_dir is not None:
        cks = [ck for ck in t3vis.open_run(run_dir).checkpoints if ck.hidden_states.shape[1] == len(X)]
        layer = cks[-1].hidden_states.shape[0] - 1 if cks else -1
        if len(cks) >= CHAIN_CHECKPOINTS:
            chosen = cks[-CHAIN_CHECKPOINTS:]
            return ([np.asarray(ck.hidden(layer), np.float32) for ck in chosen],
                    f"{run_dir} layer {layer} at steps {[ck.step for ck in chosen]}")
        if layer + 1 >= CHAIN_CHECKPOINTS:
            layers = list(range(layer + 1 - CHAIN_CHECKPOINTS, layer + 1))
            return ([np.asarray(cks[-1].hidden(i), np.float32) for i in layers],
                    f"{run_dir} step {cks[-1].step} layers {layers} (the run has {len(cks)} checkpoint(s): "
                    "layers stand in for checkpoints)")
    rng = np.random.default_rng(2)
    spread = X.std(axis=0)
    return ([X + (rng.normal(size=X.shape) * spread * 0.05 * i).astype(np.float32) for i in range(CHAIN_CHECKPOINTS)],
            "the states with growing noise")


def chain_rows(Xs, source: str, methods: list[str]) -> list[dict]:
    """The first aligned projection of a new layer, as the server makes it (align="previous",
    server/projections.py): the first checkpoint laid out on its own, each later one by
    `align_next` from the one before, then the last one's neighbourhood preservation."""
    from t3vis.analysis.projection import align_next, neighborhood_preservation, project

    n = len(Xs[0])
    rows = []
    for method in methods:
        found: dict = {}

        def chain(method=method, found=found):      # bound per iteration
            layouts = [project(Xs[0], method)]
            for i in range(1, len(Xs)):
                layouts.append(align_next(Xs[i], Xs[i - 1], layouts[-1], method))
            found["preservation"] = float(neighborhood_preservation(Xs[-1], layouts[-1], k=K).mean())

        w, c = C.timed(chain)
        print(f"[projection] first aligned {method} projection of {len(Xs)} x {n} states ({source}): {w:.1f}s "
              f"(cpu {c:.1f}s), last layout's preservation {found['preservation']:.3f}", flush=True)
        target = CHAIN_TARGET_S if method in CHAIN_TARGET_METHODS else None
        rows.append(C.result("projection", f"first aligned {method} projection, {len(Xs)} checkpoints x {n} pts", w,
                             "s", target=target, detail={"cpu_s": c, "source": source, "loadavg": C.loadavg(),
                                                         "preservation_last": found["preservation"]}))
    return rows


def main() -> list[dict]:
    n_big = C.env_int("T3VIS_BENCH_PROJ_BIG", 100_000)
    big_methods = [m.strip() for m in C.env_str("T3VIS_BENCH_PROJ_BIG_METHODS", "umap,tsne").split(",")
                   if m.strip() and m.strip() != "none"]
    run_dir = C.demo_run()
    if run_dir is not None:
        X, source = run_states(run_dir)
    else:
        X, source = synthetic_states(C.env_int("T3VIS_BENCH_PROJ_N", 2000))
        print(f"[projection] no recorded run at {C.demo_run_path()} (make demo, or set T3VIS_BENCH_RUN): "
              "falling back to synthetic points", flush=True)
    print(f"[projection] {len(X)} points x {X.shape[1]} dims, {source}", flush=True)
    rows = quality_rows(X, source, max(1, C.env_int("T3VIS_BENCH_REPEATS", 3)))
    rows += first_call_rows(X)
    chain_methods = [m.strip() for m in C.env_str("T3VIS_BENCH_PROJ_CHAIN_METHODS", "pca,tsne,umap").split(",")
                     if m.strip() and m.strip() != "none"]
    if chain_methods:
        Xs, chain_source = chain_states(run_dir, X)
        rows += chain_rows(Xs, chain_source, chain_methods)
    if big_methods:
        if run_dir is not None:
            Xb, source_b = noisy_copies(X, n_big), f"scale check: {source} repeated with noise up to {n_big}"
        else:
            Xb, source_b = synthetic_states(n_big, seed=1)
        print(f"[projection] {source_b}", flush=True)
        rows += scale_rows(Xb, source_b, big_methods)
    return rows


if __name__ == "__main__":
    C.standalone(main)
