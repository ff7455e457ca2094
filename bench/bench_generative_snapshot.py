"""A generative snapshot against a plain teacher-forced forward and backward over the same probe
set, in the same process, and its bytes per example on disk against what the format promises.

Model: a random GPT-2-shaped causal LM over the demo tokenizer (C.generative_model: 4 layers,
256 dimensions, a 30,522-token vocabulary); data: demo sentences, scored as whole texts
(task causal-lm). Baseline: the batches the task makes for the probe (length-sorted, batch 32,
max_length 128), model in eval mode, `model(**inputs, labels=labels).loss.backward()`, grads
zeroed: what a training step or an evaluation with gradients costs. Measured: the probe pass
(t3vis.record.probe.probe_examples) and the full `Recorder.snapshot(keep_weights="none")`
(probe, hidden states, outputs, heads, gate gradients, per-token arrays). Each is warmed up
once, then run `repeats` times in rotating order; a ratio is the median of the per-round ratios,
on wall-clock time (the headline) and on this process's CPU time.

Bytes: one checkpoint's files over the raw sizes the format promises for them (schema.py): per
stack hidden (L+1)*N*d*2 and gate gradients N*L*H*4, heads L*H*4*11 + L*H*K*K*2 + K*K*8,
per-token arrays 12 bytes a target token + 8 an example, outputs N*(8 + 5*4 + 4 + 1), plus 4 KiB
a file. Target 1.10: a float32 hidden.npy written by mistake is ~2x.

    .venv/bin/python bench/bench_generative_snapshot.py [--n 512] [--repeats 3] [--device cpu|cuda|auto]

Environment (used by run_all): T3VIS_BENCH_GENERATIVE_SNAPSHOT_N, T3VIS_BENCH_REPEATS,
T3VIS_BENCH_DEVICE, T3VIS_BENCH_TMP.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

TIME_TARGET = 1.25
BYTES_TARGET = 1.10
BATCH_SIZE = 32
MAX_LENGTH = 128
FILE_OVERHEAD = 4096


def baseline_pass(model, tokenizer, task, examples, device) -> int:
    """The model's own loss, forward and backward, over the task's batches; returns tokens processed."""
    import torch

    tokens = 0
    model.eval()
    with torch.enable_grad():
        for batch in task.batches(model, tokenizer, examples, batch_size=BATCH_SIZE, max_length=MAX_LENGTH,
                                  device=torch.device(device)):
            model(**batch.inputs, labels=batch.labels).loss.backward()
            model.zero_grad(set_to_none=True)
            tokens += int(batch.inputs["input_ids"].numel())
    return tokens


def promised_bytes(run, ck) -> int:
    """Raw bytes schema.py promises for one checkpoint's files (weights apart)."""
    from t3vis.store import schema

    n, K = run.num_probe or 0, int(run.meta.get("thumbnail_size", 32))
    total, files = 0, 0
    for s in run.stacks:
        L, H = s.num_layers, s.num_heads
        total += (L + 1) * n * s.hidden_size * 2 if s.hidden else 0
        cross = not s.hidden            # a stack without hidden states of its own is cross-attention
        arrays = 2 + len(schema.ATTENTION_SUMMARIES) + (len(schema.CROSS_ATTENTION_SUMMARIES) if cross else 0)
        total += n * L * H * 4 + L * H * 4 * arrays + L * H * K * K * 2 + K * K * 8
        files += 3 if s.hidden else 2
    tokens = int(ck.token_outputs.offsets[-1])
    total += tokens * 12 + (n + 1) * 8 + n * (8 + 5 * 4 + 4 + 1)
    files += 3          # tokens.npz, outputs.parquet, meta.json
    return total + files * FILE_OVERHEAD


def main(argv: list[str] | None = None) -> list[dict]:
    p = C.timing_parser(__doc__, "T3VIS_BENCH_GENERATIVE_SNAPSHOT_N", 512)
    p.add_argument("--tmp", default=C.env_str("T3VIS_BENCH_TMP", "") or None, help="folder for the temporary run")
    args = p.parse_args([] if argv is None else argv)
    import torch

    import t3vis
    from t3vis import Recorder
    from t3vis.record.probe import probe_examples
    from t3vis.tasks import get_task

    device = C.resolve_device(args.device)
    model, tokenizer = C.generative_model(device)
    texts, _ = C.demo_texts(args.n)
    task = get_task("causal-lm")
    examples = task.examples(model, texts)
    print(f"[generative snapshot] {len(texts)} sentences, batch {BATCH_SIZE}, max_length {MAX_LENGTH}, "
          f"device {device}, {torch.get_num_threads()} threads, {args.repeats} repeats", flush=True)

    with tempfile.TemporaryDirectory(prefix="t3vis-bench-generative-", dir=args.tmp) as tmp:
        recorder = Recorder(Path(tmp) / "run", model, tokenizer, texts, task=task, keep_weights="none",
                            batch_size=BATCH_SIZE, max_length=MAX_LENGTH)
        step = iter(range(1, 10_000))
        tokens: list[int] = []
        runs = {
            "baseline": lambda: tokens.append(baseline_pass(model, tokenizer, task, examples, device)),
            "probe": lambda: probe_examples(model, tokenizer, examples, task, batch_size=BATCH_SIZE,
                                            max_length=MAX_LENGTH, stacks=recorder.stacks),
            "snapshot": lambda: recorder.snapshot(step=next(step)),
        }
        load_before = C.loadavg()
        wall, cpu = C.interleaved(runs, args.repeats, device, "generative snapshot")
        run = t3vis.open_run(Path(tmp) / "run")
        ck = run.checkpoints[-1]
        on_disk = sum(p.stat().st_size for p in ck.path.iterdir() if p.is_file())
        promise = promised_bytes(run, ck)
        n_tokens = int(ck.token_outputs.offsets[-1])

    n = len(texts)
    settings = {"n": n, "batch_size": BATCH_SIZE, "max_length": MAX_LENGTH, "device": device,
                "threads": torch.get_num_threads(), "repeats": args.repeats, "tokens_per_pass": tokens[-1],
                "loadavg_before": load_before, "loadavg_after": C.loadavg(), "runs_wall": wall["baseline"]}
    rows = [C.result("generative snapshot", f"baseline fwd+bwd, {n} ex", C.median(wall["baseline"]), "s",
                     detail=settings),
            C.result("generative snapshot", f"probe(), {n} ex", C.median(wall["probe"]), "s",
                     detail={"runs_wall": wall["probe"], "runs_cpu": cpu["probe"]}),
            C.result("generative snapshot", f"Recorder.snapshot, {n} ex", C.median(wall["snapshot"]), "s",
                     detail={"runs_wall": wall["snapshot"], "runs_cpu": cpu["snapshot"]})]
    for clock, times in (("wall", wall), ("cpu", cpu)):
        for name in ("probe", "snapshot"):
            paired = [a / b for a, b in zip(times[name], times["baseline"])]
            rows.append(C.result("generative snapshot", f"{name} / baseline ({clock})", C.median(paired), "x",
                                 target=TIME_TARGET, detail={"per_round": paired}))
    rows.append(C.result("generative snapshot", "checkpoint bytes per example", on_disk / n, "B/example",
                         detail={"bytes": on_disk, "target_tokens": n_tokens}))
    rows.append(C.result("generative snapshot", "checkpoint on disk / promised raw", on_disk / promise, "x",
                         target=BYTES_TARGET, detail={"bytes": on_disk, "promise": promise}))
    return rows


if __name__ == "__main__":
    C.standalone(lambda: main(sys.argv[1:]))
