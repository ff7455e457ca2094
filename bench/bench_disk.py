"""A run's bytes on disk against the raw sizes of the arrays the format promises to store.

The run measured is the demo run (runs/demo, or T3VIS_BENCH_RUN) as `make demo` recorded it;
only where none is recorded does the benchmark record its own (N demo sentences, two snapshots
with weights) into a temporary folder, and it says which it measured.

The promise, from schema.py and run.json (L layers, H heads, d hidden size, N probed examples,
C classes, K thumbnail size, P parameters), as raw bytes with no compression:

    hidden.npy        (L+1) * N * d * 2         float16 pooled states
    gate_grads.npy    N * L * H * 2             float16
    outputs.parquet   N * (8 + 4 + 4 + 4 + 1 + 1 + 4C)   id, pred, loss, gold_prob, correct, nan, probs
    heads.npz         L*H*4 * 9 + L*H*K*K*2 + K*K*8      importances and summaries float32, thumbnails
                                                           float16, thumbnail counts int64
    weights/          P * 4 (float32 safetensors) + 2 MiB for config and tokenizer files
    examples.parquet  per example 3 * 8 (id, label, probe_row) + the UTF-8 bytes of text and split
                      + 2 * 4 (string offsets)
    dynamics parts    per row 8 + 4 + 8 + 4 + 1 (id, epoch, step, gold_prob, correct)

plus 4 KiB per file for headers and footers (npy header, Parquet footer, zip directory, JSON).
cache/ holds derived arrays, safe to delete: reported, not held to a budget.

Targets (bytes on disk / promise, <= each): every checkpoint's arrays 1.10 (weights apart),
hidden.npy alone 1.01, weights 1.10, the whole run 1.10, and 0 bytes in files the format does
not name. Why each can miss: hidden states are most of a checkpoint's budget, so an accidental
float32 write makes hidden.npy 2.0x and the checkpoint about 1.9x; a second copy of any file
(a leftover staging folder, weights saved as both .bin and .safetensors) adds its full size;
float64 weights are 2x. Compression only helps (Parquet text compresses; float16 states do not,
so they sit at 1.0x). Measured on a 2,000-state demo run (2 checkpoints with weights): worst
checkpoint 0.997x, hidden.npy 1.000x, weights 0.985x, run 0.986x; the same run with one
hidden.npy rewritten as float32: checkpoint 1.951x and hidden.npy 2.000x, both MISS; with a copy
of hidden.npy left in checkpoints/.staging-leftover/: 10,752,128 unnamed bytes, MISS.

    .venv/bin/python bench/bench_disk.py [--n 256]

Environment (used by run_all): T3VIS_BENCH_RUN, T3VIS_BENCH_DISK_N (fallback only),
T3VIS_BENCH_DEVICE, T3VIS_BENCH_TMP.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

from t3vis.store import schema

FILE_OVERHEAD = 4096               # bytes per file for headers, footers, zip directories, JSON
TOKENIZER_ALLOWANCE = 2 * 2**20    # config + tokenizer files saved next to the weights
CHECKPOINT_TARGET = 1.10
HIDDEN_TARGET = 1.01               # the npy header only
WEIGHTS_TARGET = 1.10
RUN_TARGET = 1.10
CHECKPOINT_FILES = {schema.HIDDEN, schema.GATE_GRADS, schema.OUTPUTS, schema.HEADS, schema.CHECKPOINT_META}


def file_sizes(root: Path) -> dict[str, int]:
    """Sizes of every file under root, by path relative to root."""
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def checkpoint_promise(meta: dict) -> dict[str, int]:
    """Raw bytes of each array file of one checkpoint, as the format promises them."""
    L, H, d, N = meta["num_layers"], meta["num_heads"], meta["hidden_size"], meta["num_probe"]
    C_, K = len(meta["label_names"]), meta["thumbnail_size"]
    per_head = L * H * 4 * (2 + len(schema.ATTENTION_SUMMARIES))           # importance, importance_raw, summaries
    return {schema.HIDDEN: (L + 1) * N * d * 2,
            schema.GATE_GRADS: N * L * H * 2,
            schema.OUTPUTS: N * (8 + 4 + 4 + 4 + 1 + 1 + 4 * C_),
            schema.HEADS: per_head + L * H * K * K * 2 + K * K * 8,
            schema.CHECKPOINT_META: 0}


def examples_promise(run_dir: Path) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(run_dir / schema.EXAMPLES, columns=["text", "split"])
    text_bytes = sum(int(pc.sum(pc.binary_length(table[c].cast("binary"))).as_py() or 0) for c in ("text", "split"))
    return table.num_rows * (3 * 8 + 2 * 4) + text_bytes


def dynamics_promise(run_dir: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    parts = sorted((run_dir / schema.DYNAMICS_DIR).glob("part-*.parquet"))
    return {f"{schema.DYNAMICS_DIR}/{p.name}": pq.ParquetFile(p).metadata.num_rows * (8 + 4 + 8 + 4 + 1)
            for p in parts}


def classify(name: str) -> tuple[str, str | None]:
    """(group, checkpoint folder) of a file under the run: checkpoint, weights, run, cache or unnamed."""
    parts = name.split("/")
    if parts[0] == schema.CACHE_DIR:
        return "cache", None
    if parts[0] == schema.CHECKPOINTS_DIR and len(parts) >= 3 and schema.parse_checkpoint_dirname(parts[1]) is not None:
        if parts[2] == schema.WEIGHTS_DIR:
            return "weights", parts[1]
        if len(parts) == 3 and parts[2] in CHECKPOINT_FILES:
            return "checkpoint", parts[1]
        return "unnamed", None
    if name in (schema.RUN_META, schema.EXAMPLES) or (parts[0] == schema.DYNAMICS_DIR and len(parts) == 2):
        return "run", None
    return "unnamed", None          # e.g. a leftover checkpoints/.staging-* folder


@dataclass
class Tally:
    """Bytes on disk and the promise, per group of files, of one run."""
    source: str
    meta: dict
    sizes: dict[str, int]                                             # every file, by relative path
    hidden_promise: int                                               # of one checkpoint's hidden.npy
    weights_budget: int                                               # of one checkpoint's weights/
    run_budget: int                                                   # run.json, examples, dynamics
    ck_bytes: dict[str, int] = field(default_factory=dict)            # checkpoint folder -> array files
    ck_budget: dict[str, int] = field(default_factory=dict)
    hidden: dict[str, int] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=lambda: {"run": 0, "cache": 0, "unnamed": 0})
    unnamed: list[str] = field(default_factory=list)

    def add(self, name: str, size: int, promise: dict[str, int]) -> None:
        group, ck = classify(name)
        if group == "checkpoint" and ck is not None:
            file = name.rsplit("/", 1)[1]
            self.ck_bytes[ck] = self.ck_bytes.get(ck, 0) + size
            self.ck_budget[ck] = self.ck_budget.get(ck, 0) + promise[file] + FILE_OVERHEAD
            if file == schema.HIDDEN:
                self.hidden[ck] = size
        elif group == "weights" and ck is not None:
            self.weights[ck] = self.weights.get(ck, 0) + size
        else:
            self.groups[group] += size
            if group == "unnamed":
                self.unnamed.append(name)


def measure(run_dir: Path, source: str) -> list[dict]:
    meta = json.loads((run_dir / schema.RUN_META).read_text())
    promise = checkpoint_promise(meta)
    run_promise = {schema.EXAMPLES: examples_promise(run_dir), schema.RUN_META: 0, **dynamics_promise(run_dir)}
    tally = Tally(source, meta, file_sizes(run_dir), hidden_promise=promise[schema.HIDDEN],
                  weights_budget=int(meta["model"]["num_parameters"]) * 4 + TOKENIZER_ALLOWANCE,
                  run_budget=sum(run_promise.values()) + FILE_OVERHEAD * len(run_promise))
    for name, size in tally.sizes.items():
        tally.add(name, size, promise)
    if not tally.hidden:
        raise RuntimeError(f"{source} has no checkpoint with {schema.HIDDEN} to measure; record one (make demo)")
    return _rows(tally)


def _rows(t: Tally) -> list[dict]:
    n = t.meta["num_probe"]
    total = sum(t.sizes.values()) - t.groups["cache"]
    budget = sum(t.ck_budget.values()) + len(t.weights) * t.weights_budget + t.run_budget
    worst = max(t.ck_bytes, key=lambda ck: t.ck_bytes[ck] / t.ck_budget[ck])
    worst_hidden = max(t.hidden, key=lambda ck: t.hidden[ck])
    detail = {"source": t.source, "num_probe": n, "layers": t.meta["num_layers"], "hidden": t.meta["hidden_size"],
              "checkpoint_bytes": t.ck_bytes, "checkpoint_budget": t.ck_budget, "weights_bytes": t.weights,
              "weights_budget_each": t.weights_budget, "run_files_bytes": t.groups["run"],
              "run_files_budget": t.run_budget, "cache_bytes": t.groups["cache"], "unnamed_files": t.unnamed,
              "files": t.sizes}
    print(f"[disk] {t.source}: {len(t.ck_bytes)} checkpoints, {total:,} bytes (cache excluded) against a promise "
          f"of {budget:,} ({total / budget:.3f}x); worst checkpoint {worst} "
          f"{t.ck_bytes[worst] / t.ck_budget[worst]:.3f}x", flush=True)
    rows = [C.result("disk", f"checkpoint arrays B/example, {worst} (weights excluded)", t.ck_bytes[worst] / n,
                     "B/ex", detail=detail),
            C.result("disk", "checkpoint arrays / promised raw (worst checkpoint)",
                     t.ck_bytes[worst] / t.ck_budget[worst], "x", target=CHECKPOINT_TARGET),
            C.result("disk", "hidden.npy / (L+1)*N*d*2 (largest)", t.hidden[worst_hidden] / t.hidden_promise, "x",
                     target=HIDDEN_TARGET, detail={"checkpoint": worst_hidden, "promise": t.hidden_promise})]
    if t.weights:
        heaviest = max(t.weights, key=lambda ck: t.weights[ck])
        rows.append(C.result("disk", "weights / (params*4 + 2 MiB) (largest)", t.weights[heaviest] / t.weights_budget,
                             "x", target=WEIGHTS_TARGET, detail={"checkpoint": heaviest}))
    rows += [C.result("disk", "run on disk / promised raw (cache excluded)", total / budget, "x", target=RUN_TARGET,
                      detail={"bytes": total, "budget": budget}),
             C.result("disk", "bytes in files the format does not name", t.groups["unnamed"], "B", target=0,
                      detail={"files": t.unnamed}),
             C.result("disk", "cache (derived, safe to delete)", t.groups["cache"], "B")]
    return rows


def record_fallback(n: int, device: str, run_dir: Path) -> None:
    """A small run recorded here: n demo sentences, two snapshots with weights."""
    from t3vis import Recorder

    model, tokenizer = C.load_model(device)
    texts, labels = C.demo_texts(n)
    recorder = Recorder(run_dir, model, tokenizer, texts, labels, save_weights=True)
    for step in (1, 2):
        recorder.snapshot(step=step)
    recorder.close()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=C.env_int("T3VIS_BENCH_DISK_N", 256),
                   help="sentences of the run recorded where no demo run exists")
    p.add_argument("--device", default=C.env_str("T3VIS_BENCH_DEVICE", "cpu"))
    p.add_argument("--tmp", default=C.env_str("T3VIS_BENCH_TMP", "") or None)
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args([] if argv is None else argv)
    run_dir = C.demo_run()
    if run_dir is not None:
        return measure(run_dir, f"real: {run_dir}")
    print(f"[disk] no recorded run at {C.demo_run_path()} (make demo, or set T3VIS_BENCH_RUN): recording "
          f"{args.n} demo sentences, two snapshots, into a temporary run", flush=True)
    with tempfile.TemporaryDirectory(prefix="t3vis-bench-disk-", dir=args.tmp) as tmp:
        record_fallback(args.n, C.resolve_device(args.device), Path(tmp) / "run")
        return measure(Path(tmp) / "run", f"fallback: a {args.n}-sentence run recorded here")


if __name__ == "__main__":
    C.standalone(lambda: main(sys.argv[1:]))
