"""Pruning on the demo run's probe set: the estimate against the exact figures and today's path.

Through the server's route (FastAPI's TestClient, the checkpoint's model loaded once beforehand):
  - time to the estimate (`estimate: true`, a seeded sample of PRUNE_SAMPLE probes) for
    pruning two heads on every probe example, with the unmasked baseline not yet cached (a
    new selection's first prune) and cached (any later prune of the same examples);
    target <= 1 s for the cached case, the one a user meets on every prune but the first;
  - time to the exact figures (the same request without `estimate`), baseline cached or not;
  - baseline: today's exact path measured directly in the same process: t3vis.evaluate on
    every probe with the heads masked, plus the unmasked pass a first prune also runs.
It checks the exact figures equal t3vis.evaluate's (accuracy, loss to 1e-6, flips).

    .venv/bin/python bench/bench_prune.py [--repeats 3]

Environment: T3VIS_BENCH_RUN (default runs/demo), T3VIS_BENCH_REPEATS.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

TARGET = 1.0                              # seconds to the estimate
HEAD_PAIRS = ([[2, 3], [4, 5]], [[0, 7], [5, 1]], [[1, 0], [3, 9]], [[2, 11], [5, 6]])


def main(argv: list[str] | None = None) -> list[dict]:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=C.env_int("T3VIS_BENCH_REPEATS", 3),
                        help="estimates timed, each for another pair of heads")
    args = parser.parse_args([] if argv is None else argv)
    run_dir = C.demo_run()
    if run_dir is None:
        raise SystemExit(f"no demo run at {C.demo_run_path()}: record it with `t3vis demo --no-serve`")
    import numpy as np
    import torch
    from fastapi.testclient import TestClient

    import t3vis
    from t3vis.server import create_app
    from t3vis.server import models as M

    run = t3vis.open_run(run_dir)
    ck = [c for c in run.checkpoints if c.weights_path is not None][-1]
    probes = run.probe_examples
    texts, labels = probes["text"].tolist(), probes["label"].to_numpy()
    url = f"/api/runs/{run.name}/checkpoints/{ck.step}/prune"
    print(f"[prune] {run_dir}: step {ck.step}, {len(texts)} probes, sample {M.PRUNE_SAMPLE}, "
          f"{torch.get_num_threads()} threads, load {C.loadavg()}", flush=True)
    with TestClient(create_app([run_dir], model_cache=1)) as client:
        def post(body: dict) -> tuple[float, dict]:
            t0 = time.perf_counter()
            r = client.post(url, json=body)
            assert r.status_code == 200, r.text
            return time.perf_counter() - t0, r.json()

        post({"masked_heads": HEAD_PAIRS[0], "ids": [int(probes["id"][0])]})     # loads the model: not timed
        cold, first = post({"masked_heads": HEAD_PAIRS[0], "estimate": True})  # baseline not cached yet
        exact_cold, exact = post({"masked_heads": HEAD_PAIRS[0]})               # caches the baseline
        warm = []
        for r in range(args.repeats):                 # the estimate is cheap: several head pairs
            warm.append(post({"masked_heads": HEAD_PAIRS[1 + r % (len(HEAD_PAIRS) - 1)], "estimate": True})[0])
            print(f"[prune] round {r + 1}: estimate {warm[-1]:.2f}s", flush=True)
        exact_warm = [post({"masked_heads": HEAD_PAIRS[1]})[0]]                    # a full pass: once
        print(f"[prune] first prune: estimate {cold:.2f}s, exact {exact_cold:.2f}s; later prunes: exact "
              f"{exact_warm[0]:.2f}s", flush=True)

    model, tokenizer = ck.load_model()
    masked = {layer: [head] for layer, head in HEAD_PAIRS[0]}
    options = {"max_length": int(run.meta.get("max_length", 128))}
    t0 = time.perf_counter()
    after = t3vis.evaluate(model, tokenizer, texts, labels, masked_heads=masked, **options)
    masked_pass = time.perf_counter() - t0
    t0 = time.perf_counter()
    before = t3vis.evaluate(model, tokenizer, texts, labels, **options)
    unmasked_pass = time.perf_counter() - t0
    flips = np.flatnonzero(before.predictions != after.predictions)
    equal = (first["exact"] is False and first["sample"] == M.PRUNE_SAMPLE and exact["exact"] is True
             and exact["after"]["accuracy"] == after.accuracy and exact["before"]["accuracy"] == before.accuracy
             and abs(exact["after"]["loss"] - after.loss) <= 1e-6 and abs(exact["before"]["loss"] - before.loss) <= 1e-6
             and [f["id"] for f in exact["flips"]] == probes["id"].to_numpy()[flips].tolist())
    ci = first["after"]["accuracy_interval"]
    print(f"[prune] exact figures equal t3vis.evaluate's: {equal}; estimated accuracy after "
          f"{first['after']['accuracy']:.4f} (95% interval {ci['low']:.4f} - {ci['high']:.4f}), exact "
          f"{after.accuracy:.4f}: {'inside' if ci['low'] <= after.accuracy <= ci['high'] else 'OUTSIDE'}", flush=True)
    today_first, today_cached = masked_pass + unmasked_pass, masked_pass
    detail = {"probes": len(texts), "sample": M.PRUNE_SAMPLE, "step": ck.step, "threads": torch.get_num_threads(),
              "load": C.loadavg(), "estimate_runs": warm, "exact_runs": exact_warm, "exact_first": exact_cold,
              "today_masked_pass": masked_pass, "today_unmasked_pass": unmasked_pass}
    estimate = C.median(warm)
    return [
        C.result("prune", "estimate, baseline cached (2 heads, all probes)", estimate, "s", target=TARGET,
                 detail=detail),
        C.result("prune", "estimate, first prune of these examples", cold, "s", detail=detail),
        C.result("prune", "exact figures, baseline cached", C.median(exact_warm), "s", detail=detail),
        C.result("prune", "exact figures, first prune", exact_cold, "s", detail=detail),
        C.result("prune", "today: evaluate masked + unmasked", today_first, "s", detail=detail),
        C.result("prune", "today: evaluate masked (baseline cached)", today_cached, "s", detail=detail),
        C.result("prune", "estimate / today (baseline cached)", estimate / today_cached, "x", detail=detail),
        C.result("prune", "exact figures equal t3vis.evaluate's", float(equal), "bool", target=1.0, op=">=",
                 detail=detail),
    ]


if __name__ == "__main__":
    rows = main(sys.argv[1:])
    for row in rows:
        print(f"{row['status'] or '    ':4}  {row['metric']:52} {row['value']:10.3f} {row['unit']}")
    sys.exit(1 if any(row["status"] in ("MISS", "ERROR") for row in rows) else 0)
