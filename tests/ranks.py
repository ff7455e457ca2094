"""Start a torch.distributed job of CPU ranks (gloo) as subprocesses, for the distributed tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS_DIR = str(Path(__file__).resolve().parent)


def start_ranks(code: str, world: int, port: int, timeout: float = 120) -> list[tuple[int, str, str]]:
    """(returncode, stdout, stderr) of each rank running `code` (RANK, LOCAL_RANK, WORLD_SIZE set);
    every rank is killed if one outlives the timeout, so a hang fails instead of blocking the suite."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(world)]
    finished = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            finished.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return finished


def results(finished: list[tuple[int, str, str]]) -> list[dict]:
    """Each rank's `RESULT {json}` line, after checking every rank exited cleanly."""
    out = []
    for code, stdout, stderr in finished:
        assert code == 0, f"rank failed:\n{stderr[-4000:]}"
        out.append(json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:]))
    return out
