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
last), against the last checkpoint's own unaligned layout and preservation; then the time to
project N_BIG points with each method named in T3VIS_BENCH_PROJ_BIG_METHODS; then issue 15's
scale: 1,000,000 points (T3VIS_BENCH_PROJ_HUGE) with each method in
T3VIS_BENCH_PROJ_HUGE_METHODS, fitted on a sample of 25,000 and the rest placed (target 300 s
each; baseline: PCA alone of the same points), and the preservation of the first one's layout
estimated on a sample (target 30 s; baseline: the exact preservation of 20,000 of the points,
extrapolated by its n^2 cost).

Points: the demo run's own hidden states (runs/demo, or T3VIS_BENCH_RUN: last checkpoint, last
layer, every probed example: 2,000 real states after `make demo`). Only where no run is
recorded does it fall back to synthetic clustered 384-dim data (T3VIS_BENCH_PROJ_N points, 20
clusters, each a 10-dim patch); the output and the result rows name the source used. The
5-checkpoint chain takes the run's last 5 checkpoints; a run with fewer (the demo while it
records) lends its last checkpoint's last 5 layers, real states that change from one to the
next. The N_BIG scale check needs more states than any run holds, so it is synthetic either
way: the run's states repeated with noise (10% of each dimension's spread), else the synthetic set.
No run holds a million probed examples either: the 1,000,000 points are the demo's 2,000 real
last-layer states, each once as it is and then about 500 times with that noise (`noisy_copies`,
made by blocks: 1.5 GB of float32 at 384 dims), so they are 2,000 tight clouds of real states.

The speed targets compare equal budgets and the paper's code as it runs: project() runs on one
thread below 5,000 points, so the paper's t-SNE is timed on one thread too (threadpoolctl), and
also with the machine's threads. t-SNE's target (10x) holds against both; UMAP's older floor
against equal budgets only. With two threads the paper's time follows the machine's load, not
its work: 9.7 s on a quiet machine, 70-130 s at load 4-7, where its OpenMP threads spin at each
barrier while another process holds a core (so that ratio can only flatter us under load, never
miss because of it); on one thread it took 17-27 s.

Targets (issue 15): t-SNE at least 10x faster than the paper's at 0.9x its preservation; UMAP
keeps its older floor (2.2x, 0.58x); umap's first call in a fresh process, numba cache filled,
at most 5 s over a compiled call; the first aligned t-SNE projection of 5 x 2,000 states within
5 s; 1,000,000 points laid out within 300 s by each method and their preservation estimated
within 30 s (each timed after a warm-up that compiles umap's and pynndescent's kernels).
Measured on runs/demo (`t3vis demo` recording, 2,000 states, 384 dims), 2 cores shared with
other jobs, `T3VIS_BENCH_REPEATS=2 T3VIS_BENCH_PROJ_BIG_METHODS=none`, two runs:
- 07:04 UTC, step 62, load 9-12: paper 118.0 s (fastest of 192.9 / 118.0), t-SNE 5.2 s, UMAP
  10.6 s: t-SNE 22.7x at 0.972x, UMAP 11.1x at 0.671x. umap's first call in a fresh process
  54.6 s with an empty cache (a compiled call: 8.2 s), 12.2 s with the cache filled (8.8 s).
- 07:14 UTC, step 0, load 11-13: paper 110.1 s (206.3 s in the other round; preservation 0.211),
  t-SNE 4.1 s (0.204), UMAP 8.4 s (0.150): t-SNE 26.7x at 0.966x, UMAP 13.0x at 0.712x.
  umap first call 75.0 s with an empty cache, 12.7 s with it filled (4.4 s over a compiled call).
  5-checkpoint chain (step 16, layers 2-6): t-SNE 10.1 s (4.5-5.0 s of CPU), UMAP 33.4 s; PCA
  0.7 s (since BLAS runs on one thread for inputs this small: 11.5-14.5 s before).
On that loaded machine the chain's wall time was twice its CPU time and the 5 s target missed.
- 09:47 UTC (issue 15's scale work), step 32, load 3-6, `T3VIS_BENCH_REPEATS=1`: paper 110.3 s,
  t-SNE 1.7 s (63.5x at 0.974x), UMAP 1.7 s (65.4x at 0.709x: umap-learn's own all-pairs
  distances below 4,096 points, one Python call per pair, replaced by `exact_neighbours`).
  umap's first call in a fresh process 17.2 s with an empty cache, 4.7 s with it filled (2.2 s
  compiled). 5-checkpoint chain (steps 0-32, layer 6): t-SNE 3.7 s (2.7 s of CPU; the last
  checkpoint's own layout and preservation 2.1 s: 1.7x; warm starts stop once settled, see
  `_layouts.warm_start_params`), preservation of each layout 0.206, 0.186, 0.185, 0.188, 0.188
  against 0.206, 0.192, 0.189, 0.193, 0.194 before; UMAP 5.3 s (4.5 s of CPU; 31.3 s, 15.2 s
  of CPU before), preservation 0.153, 0.153, 0.151, 0.153, 0.152 against 0.150, 0.151, 0.151,
  0.152, 0.152; PCA 0.5 s. 1,000,000 points: PCA alone 11.1 s (6.7 s of CPU), t-SNE 86.9 s
  (55.6 s of CPU, load 6.1: 7.8x PCA), UMAP 40.6 s (25.2 s, 3.6x), preservation estimated on
  2,000 points 22.1 s (13.2 s of CPU, load 5.9; the exact one extrapolated: 5,813 s). An
  earlier round at load 4-5: t-SNE 77.8 s, UMAP 39.6 s, preservation 9.5 s.
- 09:58 UTC, the same with the 100,000-point check, load 4-7: the paper's t-SNE took 9.7 s (the
  same layout, 0.202), against 70-130 s in every other round: its two OpenMP threads spin at
  each barrier while a neighbour holds a core, so its time follows the neighbours' load, and on
  a quiet machine t-SNE is 7.3x, a MISS (1.3 s; the paper's on one thread: 27 s). 100,000
  points (fitted on 25,000, the rest placed): UMAP 17.4 s, t-SNE 51.3 s; 1,000,000: t-SNE
  82.4 s, UMAP 43.9 s, preservation estimate 22.5 s (11.4 s of CPU, load 7.5); chain: t-SNE
  2.6 s, UMAP 4.3 s.
Before the first speed work (openTSNE's 250 + 500 iterations after PCA to 50 dimensions, two
threads), t-SNE ran 4.8x at 0.86x and umap's first call compiled for 13 s or more on a quiet
machine. Each target can miss: a longer schedule, a second thread under load or a lost exact neighbour
search takes t-SNE under 10x; fewer iterations, a wrong metric or PCA before the neighbour
search take it under 0.9x; numba kernels no longer cached put the first call 20-60 s over.

    .venv/bin/python bench/bench_projection.py

Environment: T3VIS_BENCH_RUN (runs/demo), T3VIS_BENCH_REPEATS (3 timed runs of each; the fastest
counts), T3VIS_BENCH_PROJ_N (2000, synthetic fallback only),
T3VIS_BENCH_PROJ_BIG (100000), T3VIS_BENCH_PROJ_BIG_METHODS ("umap,tsne"; "none" skips the scale check),
T3VIS_BENCH_PROJ_CHAIN_METHODS ("pca,tsne,umap"; "none" skips the 5-checkpoint chain),
T3VIS_BENCH_PROJ_HUGE (1000000), T3VIS_BENCH_PROJ_HUGE_METHODS ("tsne,umap"; "none" skips it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

# method -> (paper time / our time, our preservation / paper's preservation), both ">="
TARGETS = {"tsne": (10.0, 0.9), "umap": (2.2, 0.58)}
THREADS_TARGET_METHODS = ("tsne",)   # held to the speed target against the paper's on the machine's threads too
CACHED_FIRST_CALL_EXTRA_S = 5.0   # umap's first call in a fresh process, cache filled: at most this over a later one
CHAIN_CHECKPOINTS = 5
CHAIN_TARGET_S = 5.0         # the first aligned ("previous") projection of a new layer over 5 checkpoints
CHAIN_TARGET_METHODS = ("tsne",)    # the fast method carries the target; the others are reported
BIG_TARGET_S = 60.0          # DESIGN.md: 100,000 points on 2 cores in about a minute
K = 10
NOISE = 0.1                  # scale-check copies: noise as a share of each dimension's spread
NOISE_BLOCK_ROWS = 65_536
HUGE_TARGET_S = 300.0        # issue 15: 1,000,000 points on 2 cores within 5 minutes (fitted on a sample)
HUGE_PRESERVATION_TARGET_S = 30.0   # and their neighbourhood preservation estimated within 30 s
EXACT_PRESERVATION_N = 20_000       # the exact preservation timed at this size, the estimate's baseline


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
    """n rows: every row of base once, then random rows of it with noise (a scale check only).
    Made by blocks of float32, so that a million rows of 384 dims need their 1.5 GB and no more."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = np.concatenate([np.arange(len(base)), rng.integers(0, len(base), max(0, n - len(base)))])[:n]
    X = base[rows]
    scale = (NOISE * base.std(axis=0)).astype(np.float32)                     # (d,)
    for lo in range(len(base), n, NOISE_BLOCK_ROWS):                          # copies get noise, originals not
        hi = min(n, lo + NOISE_BLOCK_ROWS)
        X[lo:hi] += rng.standard_normal((hi - lo, X.shape[1]), dtype=np.float32) * scale
    return X


def paper_tsne(X):
    from sklearn.manifold import TSNE
    from sklearn.metrics.pairwise import cosine_distances

    D = cosine_distances(X)                                                   # (N, N) float32
    return TSNE(metric="precomputed", init="random", max_iter=2000, random_state=0).fit_transform(D)


def paper_tsne_one_thread(X):
    """The paper's t-SNE with BLAS and OpenMP held to one thread, the budget project() takes
    below 5,000 points."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return paper_tsne(X)


def time_layouts(X, repeats: int) -> tuple[dict, dict, dict]:
    """Layouts, and the fastest of `repeats` wall and CPU seconds, of the paper's t-SNE (with the
    machine's threads, and on one thread) and of project(tsne|umap) on X. Runs are interleaved in
    rotating order, and the fastest run counts: on 2 shared cores one run of the same call took
    10 s or 44 s (OpenMP threads stall when a neighbour holds a core), so a single run's ratio
    says more about the neighbours than the code."""
    from t3vis.analysis import project

    runs = {"paper": lambda: paper_tsne(X), "paper_1t": lambda: paper_tsne_one_thread(X),
            "tsne": lambda: project(X, "tsne"), "umap": lambda: project(X, "umap")}
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
    rows.append(C.result("projection", f"paper t-SNE on one thread, {n} pts, fastest", wall["paper_1t"], "s"))
    for name, (speed_target, quality_target) in TARGETS.items():
        speed, kept = wall["paper_1t"] / wall[name], quality[name] / quality["paper"]
        threads_target = speed_target if name in THREADS_TARGET_METHODS else None
        print(f"[projection] {name} vs paper t-SNE on {source}: {speed:.2f}x speed on one thread each (target >= "
              f"{speed_target}), {wall['paper'] / wall[name]:.2f}x against the paper's on the machine's threads "
              f"(target: {threads_target}), {kept:.3f}x preservation (target >= {quality_target})", flush=True)
        rows += [C.result("projection", f"project {name}, {n} pts, fastest", wall[name], "s"),
                 C.result("projection", f"paper (one thread) / project {name} time (wall, fastest of each)", speed,
                          "x", target=speed_target, op=">=",
                          detail={"cpu_ratio": cpu["paper_1t"] / cpu[name], "source": source}),
                 C.result("projection", f"paper (machine's threads) / project {name} time (wall, fastest of each)",
                          wall["paper"] / wall[name], "x", target=threads_target, op=">=",
                          detail={"cpu_ratio": cpu["paper"] / cpu[name]}),
                 C.result("projection", f"preservation@{K} project {name}, {n} pts", quality[name], ""),
                 C.result("projection", f"preservation@{K} {name} / paper t-SNE", kept, "x", target=quality_target,
                          op=">=", detail={"source": source})]
    return rows


def device_rows(X, source: str) -> list[dict]:
    """Where a GPU is lent (issue 15): t-SNE and UMAP of the same points on it and on the CPU,
    side by side, with their preservation; nothing where there is none."""
    import os

    from t3vis.analysis import _devices, neighborhood_preservation, project

    device = _devices.layout_device()
    if device is None:
        print("[projection] no CUDA device: layouts ran on the CPU only", flush=True)
        return []
    rows, before = [], os.environ.get(_devices.ENV)
    for method in ("tsne", "umap"):
        project(X[:300], method)                                               # CUDA context, kernels: not timed
        times, kept = {}, {}
        for where in ("gpu", "cpu"):
            _set_env(_devices.ENV, "cpu" if where == "cpu" else before)
            found: dict = {}
            times[where] = C.timed(lambda found=found, method=method: found.update(Y=project(X, method)))[0]
            kept[where] = float(neighborhood_preservation(X, found["Y"], k=K, pca_dims=None).mean())
        _set_env(_devices.ENV, before)
        print(f"[projection] {method} on {device} ({_devices.backend_name(method, {}, warm=False)}): "
              f"{times['gpu']:.2f}s, preservation {kept['gpu']:.3f}; on the CPU {times['cpu']:.2f}s, "
              f"{kept['cpu']:.3f}", flush=True)
        rows += [C.result("projection", f"project {method} on {device}, {len(X)} pts", times["gpu"], "s",
                          detail={"cpu_s": times["cpu"], "source": source}),
                 C.result("projection", f"project {method} CPU / GPU time", times["cpu"] / times["gpu"], "x"),
                 C.result("projection", f"preservation@{K} {method} GPU / CPU", kept["gpu"] / kept["cpu"], "x")]
    return rows


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


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


def huge_rows(X, source: str, n: int, methods: list[str]) -> list[dict]:
    """Issue 15's scale: n (1,000,000) points laid out with each method, fitted on a sample of
    DEFAULT_MAX_FIT points and the rest placed (`project`), then their neighbourhood
    preservation estimated on a sample (`neighborhood_preservation`'s default above 50,000).
    Baselines from the same run: PCA alone on the same points (a layout can hardly be faster
    than reading and reducing them), and the exact preservation of EXACT_PRESERVATION_N points
    (after PCA to 50 dims, as above 20,000) extrapolated to n by its n^2 cost."""
    import numpy as np

    from t3vis.analysis.projection import neighborhood_preservation, project

    Xh = noisy_copies(X, n)                                                    # (n, d) float32
    warm = noisy_copies(X, 30_000, seed=2)
    project(warm, "umap", max_fit=5000)          # compiles umap's and pynndescent's kernels (placing uses its index)
    project(warm, "tsne", max_fit=5000)
    w_pca, c_pca = C.timed(lambda: project(Xh, "pca"))
    print(f"[projection] pca on {n}: {w_pca:.1f}s (cpu {c_pca:.1f}s, load {C.loadavg()})", flush=True)
    rows = [C.result("projection", f"project pca, {n} pts (baseline)", w_pca, "s",
                     detail={"cpu_s": c_pca, "source": source, "loadavg": C.loadavg()})]
    layouts = {}
    for method in methods:
        found: dict = {}

        def call(method=method, found=found):      # bound per iteration
            found["layout"], found["info"] = project(Xh, method, return_info=True)

        w, c = C.timed(call)
        info, layouts[method] = found["info"], found["layout"]
        print(f"[projection] {method} on {n}: {w:.1f}s (cpu {c:.1f}s, load {C.loadavg()}), fitted on "
              f"{info['sampled']} and the rest placed; {w / w_pca:.1f}x PCA alone", flush=True)
        rows += [C.result("projection", f"project {method}, {n} pts (fitted on {info['sampled']}, rest placed)", w,
                          "s", target=HUGE_TARGET_S,
                          detail={"cpu_s": c, "source": source, "sampled": info["sampled"],
                                  "pca_dims": info["pca_dims"], "loadavg": C.loadavg()}),
                 C.result("projection", f"project {method} / project pca, {n} pts", w / w_pca, "x")]
    if not layouts:
        return rows
    method, Y = next(iter(layouts.items()))
    m = EXACT_PRESERVATION_N
    w_exact, _ = C.timed(lambda: neighborhood_preservation(Xh[:m], Y[:m], k=K, pca_dims=50, sample=None))
    extrapolated = w_exact * (n / m) ** 2
    found = {}
    w, c = C.timed(lambda: found.setdefault("p", neighborhood_preservation(Xh, Y, k=K)))
    p = found["p"]
    measured = int(np.isfinite(p).sum())
    print(f"[projection] preservation of the {method} layout of {n} estimated on {measured} points: "
          f"{float(np.nanmean(p)):.3f} in {w:.1f}s (cpu {c:.1f}s, load {C.loadavg()}); exact on {m} took "
          f"{w_exact:.1f}s, {extrapolated:.0f}s extrapolated to {n} ({extrapolated / w:.0f}x the estimate)",
          flush=True)
    rows += [C.result("projection", f"preservation@{K} estimate, {n} pts ({measured} sampled)", w, "s",
                      target=HUGE_PRESERVATION_TARGET_S,
                      detail={"cpu_s": c, "mean": float(np.nanmean(p)), "measured": measured, "layout": method,
                              "loadavg": C.loadavg()}),
             C.result("projection", f"preservation@{K} exact, {m} pts extrapolated to {n} / estimate",
                      extrapolated / w, "x", detail={"exact_s": w_exact, "exact_n": m})]
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
    server/projections.py, nothing cached): the first checkpoint laid out on its own, each later
    one by `align_next` from the one before, then the last one's neighbourhood preservation.
    Baseline: the unaligned layout of the last checkpoint alone, and its preservation."""
    from t3vis.analysis.projection import align_next, neighborhood_preservation, project

    n = len(Xs[0])
    rows = []
    for method in methods:
        found: dict = {}

        def alone(method=method):
            neighborhood_preservation(Xs[-1], project(Xs[-1], method), k=K)

        def chain(method=method, found=found):      # bound per iteration
            layouts = [project(Xs[0], method)]
            for i in range(1, len(Xs)):
                layouts.append(align_next(Xs[i], Xs[i - 1], layouts[-1], method))
            found["preservation"] = float(neighborhood_preservation(Xs[-1], layouts[-1], k=K).mean())
            found["layouts"] = layouts

        w_alone, c_alone = C.timed(alone)
        w, c = C.timed(chain)
        each = [round(float(neighborhood_preservation(X, Y, k=K).mean()), 4) for X, Y in zip(Xs, found["layouts"])]
        print(f"[projection] first aligned {method} projection of {len(Xs)} x {n} states ({source}): {w:.1f}s "
              f"(cpu {c:.1f}s, load {C.loadavg()}), {w / w_alone:.1f}x the last checkpoint's own layout "
              f"({w_alone:.1f}s, cpu {c_alone:.1f}s); preservation of each layout {each}", flush=True)
        target = CHAIN_TARGET_S if method in CHAIN_TARGET_METHODS else None
        rows += [C.result("projection", f"first aligned {method} projection, {len(Xs)} checkpoints x {n} pts", w,
                          "s", target=target, detail={"cpu_s": c, "source": source, "loadavg": C.loadavg(),
                                                      "preservation_last": found["preservation"],
                                                      "preservation_each": each}),
                 C.result("projection", f"first aligned {method} projection / one checkpoint's own layout", w / w_alone,
                          "x", detail={"alone_s": w_alone, "alone_cpu_s": c_alone, "cpu_ratio": c / c_alone})]
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
    rows += device_rows(X, source)
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
    huge_methods = [m.strip() for m in C.env_str("T3VIS_BENCH_PROJ_HUGE_METHODS", "tsne,umap").split(",")
                    if m.strip() and m.strip() != "none"]
    if huge_methods:
        n_huge = C.env_int("T3VIS_BENCH_PROJ_HUGE", 1_000_000)
        source_h = (f"{source} repeated with noise up to {n_huge}" if run_dir is not None
                    else f"synthetic: {n_huge} points")
        Xbase = X if run_dir is not None else synthetic_states(2000)[0]
        print(f"[projection] scale check, {source_h}", flush=True)
        rows += huge_rows(Xbase, source_h, n_huge, huge_methods)
    return rows


if __name__ == "__main__":
    C.standalone(main)
