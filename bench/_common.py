"""Shared helpers for the benchmark suite (not a benchmark itself: run_all picks up bench_*.py only).

A result is a flat dict:

    bench    which benchmark file produced it ("snapshot", "disk")
    metric   what was measured
    value    the number
    unit     "s", "x" (a ratio), "B/example", ...
    target   the number the value is held against, or None for informational rows
    op       "<=" or ">=": how value must compare with target to PASS
    status   "PASS", "MISS", "ERROR" (the benchmark crashed) or "" (informational);
             any MISS or ERROR makes run_all (and a benchmark run on its own) exit 1
    detail   free-form dict (raw timings, sizes, settings)
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"

# make `import t3vis` work from a plain checkout too (the venv installs it editable anyway)
if str(REPO / "src") not in sys.path:
    sys.path.append(str(REPO / "src"))


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not an integer") from None


def env_str(name: str, default: str) -> str:
    return os.environ.get(name) or default


DEMO_RUN = REPO / "runs" / "demo"


def demo_run() -> Path | None:
    """The run `make demo` records (runs/demo, or T3VIS_BENCH_RUN), or None where none is recorded.

    Benchmarks measure on it where the product meets real data (its hidden states, its files);
    they fall back to data they make themselves only without it, and say which they used.
    """
    run_dir = demo_run_path()
    return run_dir if (run_dir / "run.json").is_file() else None


def demo_run_path() -> Path:
    """Where demo_run() looks (to name in a message when nothing is there)."""
    return Path(env_str("T3VIS_BENCH_RUN", str(DEMO_RUN)))


def timing_parser(doc: str, n_env: str, n_default: int, n_help: str = "sentences"):
    """argparse parser with the options every timed benchmark shares: --n, --repeats, --device."""
    import argparse

    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--n", type=int, default=env_int(n_env, n_default), help=n_help)
    p.add_argument("--repeats", type=int, default=env_int("T3VIS_BENCH_REPEATS", 3))
    p.add_argument("--device", default=env_str("T3VIS_BENCH_DEVICE", "cpu"))
    return p


def result(bench: str, metric: str, value: float, unit: str, *, target: float | None = None, op: str = "<=",
           detail: dict | None = None) -> dict:
    status = ""
    if target is not None:
        ok = value <= target if op == "<=" else value >= target
        status = "PASS" if ok else "MISS"
    return {"bench": bench, "metric": metric, "value": float(value), "unit": unit, "target": target,
            "op": op if target is not None else None, "status": status, "detail": detail or {}}


def median(values) -> float:
    return float(statistics.median(values))


def resolve_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str = "cpu") -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call, with the accelerator drained before and after.

    CPU time counts every thread of this process and none of a noisy neighbour's, so its ratios
    hold up better than wall-clock ratios on a shared machine (it leaves out I/O waits).
    """
    synchronize(device)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return time.perf_counter() - w0, time.process_time() - c0


def interleaved(runs: dict[str, Callable[[], object]], repeats: int, device: str,
                label: str) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(wall, cpu) seconds of each run per round: each warmed up once, then `repeats` rounds in an
    order rotated every round, so that drift on a shared machine hits every run alike."""
    names = list(runs)
    for name in names:                                   # warm-up, not counted
        timed(runs[name], device)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            w, c = timed(runs[name], device)
            wall[name].append(w)
            cpu[name].append(c)
        print(f"[{label}] round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in wall.items()), flush=True)
    return wall, cpu


def loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def demo_texts(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """n demo sentences with labels: a fixed random sample (both classes, realistic lengths)."""
    import numpy as np

    from t3vis.defaults import load_demo_data

    frame = load_demo_data()
    if n > len(frame):
        raise SystemExit(f"asked for {n} demo sentences; the demo data has {len(frame)}")
    rows = np.random.default_rng(seed).permutation(len(frame))[:n]
    sample = frame.iloc[np.sort(rows)]
    return sample["text"].tolist(), sample["label"].astype(int).tolist()


def load_model(device: str):
    from transformers.utils import logging as hf_logging

    from t3vis.defaults import load_demo_model

    hf_logging.set_verbosity_error()      # the fresh head's "MISSING classifier" report is expected
    hf_logging.disable_progress_bar()

    model, tokenizer = load_demo_model()
    return model.to(device), tokenizer


def generative_model(device: str):
    """(model, tokenizer): a random GPT-2-shaped causal LM (4 layers, 256 dimensions, 4 heads) over
    the demo model's tokenizer, eager attention. No generative model's weights ship in a package
    on the registries (the next issue looks for one), so its size, not its training, is what the
    generative benchmarks measure."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config
    from transformers.utils import logging as hf_logging

    from t3vis.defaults import demo_model_path

    hf_logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path())
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=256, n_layer=4, n_head=4, n_positions=128,
                        pad_token_id=tokenizer.pad_token_id)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return model.to(device).eval(), tokenizer


def machine_info() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # the table is still useful without torch details
        pass
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except Exception:
        pass
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                            text=True, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        info["src_dirty"] = bool(dirty)
    except Exception:
        pass
    return info


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "x":
        return f"{value:.3f}"
    if unit == "s":
        return f"{value:.3f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def format_table(results: list[dict]) -> str:
    headers = ["bench", "metric", "value", "unit", "target", "status"]
    rows = []
    for r in results:
        target = "" if r.get("target") is None else f"{r['op']} {_fmt(r['target'], r['unit'])}"
        rows.append([r["bench"], r["metric"], _fmt(r.get("value"), r["unit"]), r["unit"], target, r.get("status", "")])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    right = {2, 4}
    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    return "\n".join(out)


def summary_line(results: list[dict]) -> str:
    counts = {status: sum(r.get("status") == status for r in results) for status in ("PASS", "MISS", "ERROR")}
    return f"{len(results)} rows, " + ", ".join(f"{n} {status}" for status, n in counts.items())


def exit_code(results: list[dict], *, crashed: bool = False) -> int:
    """1 when a target was missed or a benchmark crashed, else 0."""
    missed = any(r.get("status") in ("MISS", "ERROR") for r in results)
    return 1 if crashed or missed else 0


def standalone(main: Callable[[], list[dict]]) -> None:
    """Entry point for `python bench/bench_x.py`: run, print the table, exit 1 on any MISS (as run_all)."""
    results = main()
    print()
    print(format_table(results))
    print(summary_line(results))
    sys.exit(exit_code(results))
