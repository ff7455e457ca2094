"""Snapshot time against a plain forward + backward over the same probe set, in the same process.

Baseline: the batches probe.py makes (length-sorted, batch size 32, max_length 128, the same
tokenizer call), model in eval mode, forward + cross-entropy + loss.backward(), grads zeroed.
Measured: `t3vis.record.probe.probe` over the same texts (the pass a snapshot makes) and the
full `Recorder.snapshot(save_weights=False)` (probe + hidden.npy, outputs.parquet, heads.npz).
Each is warmed up once, then run `repeats` times, interleaved in rotating order so that drift
on a shared machine hits all three alike; a ratio is the median of the per-round ratios.
Ratios are given on wall-clock time (the headline) and on this process's CPU time (which a
noisy neighbour inflates far less); "noise" is the slowest over the fastest baseline pass.

    .venv/bin/python bench/bench_snapshot.py [--n 512] [--repeats 3] [--device cpu|cuda|auto]

Environment (used by run_all): T3VIS_BENCH_SNAPSHOT_N, T3VIS_BENCH_REPEATS, T3VIS_BENCH_DEVICE,
T3VIS_BENCH_TMP (folder for the temporary run; default the system temp folder).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

TARGET = 1.25
BATCH_SIZE = 32
MAX_LENGTH = 128


def baseline_pass(model, tokenizer, texts, labels, *, batch_size=BATCH_SIZE, max_length=MAX_LENGTH) -> int:
    """forward + cross-entropy + backward over probe.py's batches; returns the tokens processed."""
    import numpy as np
    import torch
    from torch import nn

    device = next(model.parameters()).device
    labels = np.asarray(labels, dtype=np.int64)
    order = np.argsort([len(t) for t in texts], kind="stable")   # as probe.py sorts
    tokens = 0
    model.eval()
    with torch.enable_grad():
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt", padding_side="right")
            enc = {k: v.to(device) for k, v in enc.items()}
            gold = torch.as_tensor(labels[rows], device=device)
            logits = model(**enc).logits.float()
            loss = nn.functional.cross_entropy(logits, gold)
            loss.backward()
            model.zero_grad(set_to_none=True)
            tokens += int(enc["input_ids"].numel())
    return tokens


def parse_args(argv):
    p = C.timing_parser(__doc__, "T3VIS_BENCH_SNAPSHOT_N", 512, "probe sentences")
    p.add_argument("--tmp", default=C.env_str("T3VIS_BENCH_TMP", "") or None, help="folder for the temporary run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args([] if argv is None else argv)
    import torch

    from t3vis import Recorder
    from t3vis.record.probe import probe

    device = C.resolve_device(args.device)
    model, tokenizer = C.load_model(device)
    texts, labels = C.demo_texts(args.n)
    print(f"[snapshot] {len(texts)} sentences, batch {BATCH_SIZE}, max_length {MAX_LENGTH}, device {device}, "
          f"{torch.get_num_threads()} threads, {args.repeats} repeats", flush=True)

    with tempfile.TemporaryDirectory(prefix="t3vis-bench-snapshot-", dir=args.tmp) as tmp:
        recorder = Recorder(Path(tmp) / "run", model, tokenizer, texts, labels, save_weights=False,
                            batch_size=BATCH_SIZE, max_length=MAX_LENGTH)
        step = iter(range(1, 10_000))
        probe_seconds: list[float] = []
        tokens: list[int] = []

        def run_snapshot():
            summary = recorder.snapshot(step=next(step))
            probe_seconds.append(summary.metrics["probe_seconds"])

        runs = {
            "baseline": lambda: tokens.append(baseline_pass(model, tokenizer, texts, labels)),
            "probe": lambda: probe(model, tokenizer, texts, labels, batch_size=BATCH_SIZE, max_length=MAX_LENGTH,
                                   layout=recorder.layout),
            "snapshot": run_snapshot,
        }
        load_before = C.loadavg()
        wall, cpu = C.interleaved(runs, args.repeats, device, "snapshot")
        write_overhead = [w - p for w, p in zip(wall["snapshot"], probe_seconds[1:])]

    base = wall["baseline"]
    settings = {"n": len(texts), "batch_size": BATCH_SIZE, "max_length": MAX_LENGTH, "device": device,
                "threads": torch.get_num_threads(), "repeats": args.repeats, "tokens_per_pass": tokens[-1],
                "loadavg_before": load_before, "loadavg_after": C.loadavg(), "runs_wall": base,
                "runs_cpu": cpu["baseline"]}
    n = len(texts)
    rows = [C.result("snapshot", f"baseline fwd+bwd, {n} ex", C.median(base), "s", detail=settings),
            C.result("snapshot", f"probe(), {n} ex", C.median(wall["probe"]), "s",
                     detail={"runs_wall": wall["probe"], "runs_cpu": cpu["probe"]}),
            C.result("snapshot", f"Recorder.snapshot, {n} ex", C.median(wall["snapshot"]), "s",
                     detail={"runs_wall": wall["snapshot"], "runs_cpu": cpu["snapshot"],
                             "write_overhead_median_s": C.median(write_overhead)})]
    for clock, times in (("wall", wall), ("cpu", cpu)):
        for name in ("probe", "snapshot"):
            paired = [a / b for a, b in zip(times[name], times["baseline"])]
            rows.append(C.result("snapshot", f"{name} / baseline ({clock})", C.median(paired), "x", target=TARGET,
                                 detail={"per_round": paired,
                                         "ratio_of_medians": C.median(times[name]) / C.median(times["baseline"])}))
    # how noisy this run was: slowest / fastest baseline pass (1.0 = perfectly steady)
    rows.append(C.result("snapshot", "noise: baseline max/min (wall)", max(base) / min(base), "x"))
    return rows


if __name__ == "__main__":
    C.standalone(lambda: main(sys.argv[1:]))
