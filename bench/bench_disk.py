"""Bytes on disk per example per checkpoint, weights excluded (save_weights=False).

Records one snapshot for N1 and one for N2 demo sentences into temporary runs and sums the
file sizes of each checkpoint folder. The marginal cost (size(N2) - size(N1)) / (N2 - N1)
cancels the fixed part (meta.json, attention summaries, thumbnails, Parquet footers); the
average at N2 includes it. Target per example: (layers + 1) * hidden * 2 + 256 bytes, the
float16 pooled states plus 256 bytes for everything else (layers and hidden from run.json).

    .venv/bin/python bench/bench_disk.py [--n1 256] [--n2 1024]

Environment (used by run_all): T3VIS_BENCH_DISK_N1, T3VIS_BENCH_DISK_N2, T3VIS_BENCH_DEVICE,
T3VIS_BENCH_TMP.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def folder_bytes(path: Path) -> dict[str, int]:
    """Sizes of every file under path, by relative name."""
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def record(model, tokenizer, texts, labels, run_dir: Path) -> tuple[dict, dict[str, int]]:
    from t3vis import Recorder

    summary = Recorder(run_dir, model, tokenizer, texts, labels, save_weights=False).snapshot(step=1)
    meta = json.loads((run_dir / "run.json").read_text())
    return meta, folder_bytes(summary.path)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n1", type=int, default=C.env_int("T3VIS_BENCH_DISK_N1", 256))
    p.add_argument("--n2", type=int, default=C.env_int("T3VIS_BENCH_DISK_N2", 1024))
    p.add_argument("--device", default=C.env_str("T3VIS_BENCH_DEVICE", "cpu"))
    p.add_argument("--tmp", default=C.env_str("T3VIS_BENCH_TMP", "") or None)
    args = p.parse_args(argv)
    if not 0 < args.n1 < args.n2:
        p.error("need 0 < n1 < n2")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args([] if argv is None else argv)
    device = C.resolve_device(args.device)
    model, tokenizer = C.load_model(device)
    texts, labels = C.demo_texts(args.n2)   # the N1 run probes the first N1 of the same sample
    sizes: dict[int, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="t3vis-bench-disk-", dir=args.tmp) as tmp:
        for n in (args.n1, args.n2):
            meta, sizes[n] = record(model, tokenizer, texts[:n], labels[:n], Path(tmp) / f"run-{n}")
            print(f"[disk] N={n}: {sum(sizes[n].values()):,} bytes in the checkpoint folder "
                  + ", ".join(f"{k} {v:,}" for k, v in sizes[n].items()), flush=True)

    layers, hidden = int(meta["num_layers"]), int(meta["hidden_size"])
    target = (layers + 1) * hidden * 2 + 256
    total1, total2 = sum(sizes[args.n1].values()), sum(sizes[args.n2].values())
    marginal = (total2 - total1) / (args.n2 - args.n1)
    average = total2 / args.n2
    per_file = {name: (sizes[args.n2].get(name, 0) - sizes[args.n1].get(name, 0)) / (args.n2 - args.n1)
                for name in sorted(set(sizes[args.n1]) | set(sizes[args.n2]))}
    detail = {"n1": args.n1, "n2": args.n2, "layers": layers, "hidden": hidden, "target_bytes": target,
              "bytes_n1": sizes[args.n1], "bytes_n2": sizes[args.n2], "marginal_per_file": per_file}
    return [
        C.result("disk", f"marginal B/example ({args.n1}->{args.n2})", marginal, "B/ex", target=target, detail=detail),
        C.result("disk", f"average B/example at N={args.n2}", average, "B/ex", target=target,
                 detail={"fixed_bytes_estimate": total2 - marginal * args.n2}),
        C.result("disk", "marginal / target", marginal / target, "x", target=1.0),
        C.result("disk", f"average at N={args.n2} / target", average / target, "x", target=1.0),
    ]


if __name__ == "__main__":
    C.standalone(lambda: main(sys.argv[1:]))
