"""Head importance against a plain forward + backward over the same examples, in the same process.

Baseline: bench_snapshot's `baseline_pass` (probe.py's batches: length-sorted, batch size 32,
max_length 128, the same tokenizer call; eval mode, forward + cross-entropy + loss.backward(),
grads zeroed). Measured: `t3vis.head_importance(method="gate")` over the same texts (one
forward with gated heads and one gradient to the gates per batch; "taylor" is the same
pass), and, for information, `t3vis.evaluate` with 30% of the heads masked (forward only).
Each is warmed up once, then run `repeats` times in rotating order; a ratio is the median
of the per-round ratios, on wall-clock time (the headline) and on this process's CPU time.

    .venv/bin/python bench/bench_heads.py [--n 512] [--repeats 3] [--device cpu|cuda|auto]

Environment (used by run_all): T3VIS_BENCH_HEADS_N, T3VIS_BENCH_REPEATS, T3VIS_BENCH_DEVICE.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C
from bench_snapshot import BATCH_SIZE, MAX_LENGTH, baseline_pass

TARGET = 1.1
MASKED_SHARE = 0.3


def parse_args(argv):
    return C.timing_parser(__doc__, "T3VIS_BENCH_HEADS_N", 512).parse_args(argv)


def _masked_heads(num_layers: int, num_heads: int) -> dict[int, list[int]]:
    import numpy as np

    k = round(MASKED_SHARE * num_layers * num_heads)
    flat = np.random.default_rng(0).choice(num_layers * num_heads, k, replace=False)
    mask: dict[int, list[int]] = {}
    for f in sorted(flat.tolist()):
        mask.setdefault(f // num_heads, []).append(f % num_heads)
    return mask


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args([] if argv is None else argv)
    import torch

    import t3vis
    from t3vis.models.structure import find_attention_layout

    device = C.resolve_device(args.device)
    model, tokenizer = C.load_model(device)
    texts, labels = C.demo_texts(args.n)
    layout = find_attention_layout(model)
    mask = _masked_heads(layout.num_layers, layout.num_heads)
    print(f"[heads] {len(texts)} sentences, batch {BATCH_SIZE}, max_length {MAX_LENGTH}, device {device}, "
          f"{torch.get_num_threads()} threads, {args.repeats} repeats", flush=True)
    options = {"batch_size": BATCH_SIZE, "max_length": MAX_LENGTH, "layout": layout}
    runs = {
        "baseline": lambda: baseline_pass(model, tokenizer, texts, labels),
        "importance": lambda: t3vis.head_importance(model, tokenizer, texts, labels, **options),
        "evaluate": lambda: t3vis.evaluate(model, tokenizer, texts, labels, mask, **options),
    }
    wall, cpu = _measure(runs, args.repeats, device)
    return _rows(wall, cpu, len(texts), {"n": len(texts), "batch_size": BATCH_SIZE, "max_length": MAX_LENGTH,
                                         "device": device, "threads": torch.get_num_threads(),
                                         "repeats": args.repeats, "masked_heads": sum(map(len, mask.values()))})


def _measure(runs: dict, repeats: int, device: str) -> tuple[dict, dict]:
    names = list(runs)
    for name in names:                                       # warm-up, not counted
        C.timed(runs[name], device)
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:   # rotate the order each round
            w, c = C.timed(runs[name], device)
            wall[name].append(w)
            cpu[name].append(c)
        print(f"[heads] round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in wall.items()), flush=True)
    return wall, cpu


def _rows(wall: dict, cpu: dict, n: int, settings: dict) -> list[dict]:
    base = wall["baseline"]
    rows = [C.result("heads", f"baseline fwd+bwd, {n} ex", C.median(base), "s",
                     detail={**settings, "loadavg": C.loadavg(), "runs_wall": base, "runs_cpu": cpu["baseline"]}),
            C.result("heads", f"head_importance, {n} ex", C.median(wall["importance"]), "s",
                     detail={"runs_wall": wall["importance"], "runs_cpu": cpu["importance"]}),
            C.result("heads", f"evaluate (30% masked), {n} ex", C.median(wall["evaluate"]), "s",
                     detail={"runs_wall": wall["evaluate"], "runs_cpu": cpu["evaluate"]})]
    for clock, times in (("wall", wall), ("cpu", cpu)):
        paired = [a / b for a, b in zip(times["importance"], times["baseline"])]
        rows.append(C.result("heads", f"head_importance / baseline ({clock})", C.median(paired), "x", target=TARGET,
                             detail={"per_round": paired}))
        print(f"[heads] head_importance / baseline fwd+bwd ({clock}): {C.median(paired):.3f}x "
              f"(target <= {TARGET})", flush=True)
    paired = [a / b for a, b in zip(wall["evaluate"], base)]
    rows.append(C.result("heads", "evaluate / baseline (wall)", C.median(paired), "x", detail={"per_round": paired}))
    rows.append(C.result("heads", "noise: baseline max/min (wall)", max(base) / min(base), "x"))
    return rows


if __name__ == "__main__":
    C.standalone(lambda: main(sys.argv[1:]))
