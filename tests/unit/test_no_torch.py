"""Reading a run imports neither torch nor transformers (runs open on machines without them)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")

READ_WITHOUT_TORCH = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {src!r})
    import t3vis
    run = t3vis.open_run({run!r})
    ex = run.examples
    ck = run.checkpoints[-1]
    out = ck.outputs
    h = ck.hidden(1)
    imp = ck.head_importance
    dyn = run.dynamics()
    summary = ck.attention_summary("entropy")
    print(json.dumps({{
        "modules": sorted(m for m in ("torch", "transformers") if m in sys.modules),
        "steps": [c.step for c in run.checkpoints],
        "examples": len(ex), "outputs": len(out), "hidden": list(h.shape), "importance": list(imp.shape),
        "dynamics": len(dyn), "summary": list(summary.shape), "t3vis_file": t3vis.__file__,
    }}))
""")

RECORDER_IMPORTS_TORCH = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {src!r})
    import t3vis
    before = sorted(m for m in ("torch", "transformers") if m in sys.modules)
    t3vis.Recorder
    after = sorted(m for m in ("torch", "transformers") if m in sys.modules)
    print(json.dumps({{"before": before, "after": after}}))
""")


def run_python(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_reading_a_run_imports_no_torch(tiny_run):
    run_dir, texts, _labels = tiny_run
    got = run_python(READ_WITHOUT_TORCH.format(src=SRC, run=str(run_dir)))
    assert got["t3vis_file"].startswith(SRC)
    # the reads really happened, on real data
    assert got["steps"] == [0, 5]
    assert got["examples"] == len(texts)
    assert got["outputs"] == len(texts)
    assert got["hidden"] == [len(texts), 32]
    assert got["importance"] == [2, 4]
    assert got["summary"] == [2, 4]
    assert got["dynamics"] == 12
    assert got["modules"] == []


def test_the_check_can_fail_recorder_imports_torch():
    # the same detection in the same kind of subprocess sees torch once the recorder is imported,
    # so an empty list above means torch was really absent
    got = run_python(RECORDER_IMPORTS_TORCH.format(src=SRC))
    assert got["before"] == []
    assert "torch" in got["after"]
