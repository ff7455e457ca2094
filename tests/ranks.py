"""Start a torch.distributed job of CPU ranks (gloo) as subprocesses, for the distributed tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS_DIR = str(Path(__file__).resolve().parent)


_SCRIPT = """\
import json, os, sys
sys.path.insert(0, {tests!r})
import torch
import torch.distributed as dist
import t3vis

rank = int(os.environ["RANK"])
dist.init_process_group("gloo", init_method={init!r}, rank=rank, world_size={world})


def main():
    global t3vis       # (a body's `import t3vis.x` binds the module's name, not a local)
    torch.set_num_threads(1)
{body}


try:
    main()
finally:
    # What the body made (a DDP or FSDP model holds the process group) is gone with main(), so
    # nothing of gloo is left to the interpreter's own teardown; and both ranks reach teardown
    # together. A gloo object destroyed during interpreter finalization, or a rank destroying
    # gloo while its peer still talks to it, aborts at exit ("terminate called without an
    # active exception"): seen once in a CI run of the not-shared DDP seq2seq case.
    import gc
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
"""


def script(body: str, init_file: Path, world: int) -> str:
    """A rank's program: join the gloo group (file init), run `body` (it sees rank, dist, torch,
    json and t3vis, and prints its `RESULT {json}` line), then leave the group with the others."""
    return _SCRIPT.format(tests=TESTS_DIR, init=f"file://{init_file}", world=world,
                          body=textwrap.indent(textwrap.dedent(body).strip(), " " * 4))


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
