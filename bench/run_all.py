"""Run every bench/bench_*.py, print one table, write bench/out/results.json.

Each benchmark module exposes `main() -> list[dict]` (rows as described in bench/_common.py)
and also runs on its own. Ratios are measured against a baseline taken in the same run, so
they mean something on a shared, noisy machine. The exit code is 0 only when every target is
met: 1 when any row MISSes its target or any benchmark crashed (an ERROR row), so `make bench`
fails on a regression.

    .venv/bin/python bench/run_all.py [--only snapshot,disk] [--out bench/out/results.json]

Settings travel as environment variables (see each bench file's docstring), e.g.
T3VIS_BENCH_SNAPSHOT_N=128 T3VIS_BENCH_REPEATS=5 make bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C


def discover(only: set[str] | None) -> list[Path]:
    files = sorted(C.BENCH_DIR.glob("bench_*.py"))
    if only:
        files = [f for f in files if f.stem.removeprefix("bench_") in only]
    return files


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module          # as `import` does: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="comma-separated benchmark names (the part after bench_)")
    p.add_argument("--out", type=Path, default=C.OUT_DIR / "results.json")
    args = p.parse_args(argv)

    files = discover({s.strip() for s in args.only.split(",") if s.strip()} or None)
    if not files:
        print("no benchmarks matched", file=sys.stderr)
        return 1
    started = time.perf_counter()
    results: list[dict] = []
    runs: list[dict] = []
    failed = False
    for path in files:
        name = path.stem.removeprefix("bench_")
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            rows = load(path).main()
            results.extend(rows)
            runs.append({"bench": name, "seconds": time.perf_counter() - t0, "ok": True})
        except Exception as e:  # one broken benchmark must not hide the others' numbers
            failed = True
            traceback.print_exc()
            runs.append({"bench": name, "seconds": time.perf_counter() - t0, "ok": False,
                         "error": f"{type(e).__name__}: {e}"})
            results.append({"bench": name, "metric": f"FAILED: {type(e).__name__}", "value": None, "unit": "",
                            "target": None, "op": None, "status": "ERROR", "detail": {"error": str(e)}})
        print(f"== {name} done in {time.perf_counter() - t0:.1f}s", flush=True)

    total = time.perf_counter() - started
    print()
    print(C.format_table(results))
    print(f"\n{C.summary_line(results)}, {total:.0f}s in all")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "total_seconds": total, "machine": C.machine_info(), "benchmarks": runs, "results": results}
    args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return C.exit_code(results, crashed=failed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
