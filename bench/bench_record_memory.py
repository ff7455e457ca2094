"""A snapshot's peak memory does not grow with the number of probe examples.

Each size is recorded in a fresh subprocess (one torch thread): a random BERT (12 layers of 32
dimensions, 2 heads, built from a config, no download: many thin layers make many pooled states
per example for little compute) over the demo model's tokenizer, a Recorder over N synthetic
sentences (2 to 5 words), one `Recorder.snapshot(keep_weights="none")`. The child reports its
peak resident set (resource.getrusage ru_maxrss, which counts the pages of memory-mapped files
it touched as well as its own memory), its resident set just before the snapshot, and the
snapshot's wall time. The target: peak RSS at the large size over peak RSS at the small one, at
most 1.25, although the large run's per-example arrays (hidden states 13 x N x 32 float16, gate
gradients N x 12 x 2 float32) are ten times the small one's. The snapshot time per 1,000 probes
is reported for both sizes.

One million probes take about 17 minutes on a small shared CPU, too long for a routine bench, so
the sizes default to 20,000 and 200,000 (T3VIS_BENCH_RECORD_SMALL, T3VIS_BENCH_RECORD_LARGE).
Measured before the per-example arrays were streamed (hidden states in a memory map kept open,
gate gradients in memory, the probe set tokenised whole): 628 MB at 20,000 probes, 983 MB at
200,000 (1.56x), 2,854 MB at 1,000,000.

    .venv/bin/python bench/bench_record_memory.py [--small 20000] [--large 200000]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

TARGET = 1.25
BATCH_SIZE = 512
MAX_LENGTH = 16
HIDDEN = 32
LAYERS = 12
WORDS = ("the a movie film was is great bad boring fun plot actor script good awful love hate "
         "scene story funny dull best worst really not very quite so and but").split()


def _rss_mb() -> float:
    """This process's resident set now (Linux /proc), in MB."""
    fields = Path("/proc/self/status").read_text().split("VmRSS:")[1].split()
    return int(fields[0]) / 1024


def child(n: int, folder: str) -> dict:
    """Record n probes into folder/run in this process; what it measured."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    from t3vis import Recorder
    from t3vis.defaults import demo_model_path

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path())
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
                        intermediate_size=HIDDEN, max_position_embeddings=64, num_labels=2,
                        attn_implementation="eager")
    model = BertForSequenceClassification(config).eval()
    rng = np.random.default_rng(0)
    words = np.array(WORDS)
    texts = [" ".join(words[rng.integers(0, len(words), k)]) for k in rng.integers(2, 6, n)]
    labels = rng.integers(0, 2, n).tolist()
    recorder = Recorder(Path(folder) / "run", model, tokenizer, texts, labels, keep_weights="none",
                        batch_size=BATCH_SIZE, max_length=MAX_LENGTH)
    before = _rss_mb()
    started = time.perf_counter()
    recorder.snapshot(step=1)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024    # kB on Linux
    return {"n": n, "peak_rss_mb": peak, "rss_before_snapshot_mb": before, "snapshot_seconds": seconds}


def measure(n: int, tmp: str | None) -> dict:
    """child(n) in a fresh interpreter, so one size's peak never carries into the other's."""
    with tempfile.TemporaryDirectory(prefix="t3vis-bench-record-", dir=tmp) as folder:
        env = dict(os.environ, OMP_NUM_THREADS="1",
                   TOKENIZERS_PARALLELISM="false")
        done = subprocess.run([sys.executable, __file__, "--child", str(n), folder], env=env, capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"recording {n} probes failed:\n{done.stderr[-3000:]}")
        line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
        return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> list[dict]:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=C.env_int("T3VIS_BENCH_RECORD_SMALL", 20_000))
    p.add_argument("--large", type=int, default=C.env_int("T3VIS_BENCH_RECORD_LARGE", 200_000))
    p.add_argument("--tmp", default=C.env_str("T3VIS_BENCH_TMP", "") or None, help="folder for the temporary runs")
    args = p.parse_args([] if argv is None else argv)

    load_before = C.loadavg()
    small, large = (measure(n, args.tmp) for n in (args.small, args.large))
    for m in (small, large):
        print(f"[record memory] {m['n']} probes: peak RSS {m['peak_rss_mb']:.0f} MB "
              f"({m['rss_before_snapshot_mb']:.0f} MB before the snapshot), snapshot {m['snapshot_seconds']:.1f} s, "
              f"load {C.loadavg()}", flush=True)
    settings = {"batch_size": BATCH_SIZE, "max_length": MAX_LENGTH, "loadavg_before": load_before,
                "loadavg_after": C.loadavg(), "small": small, "large": large}
    rows = [C.result("record memory", f"peak RSS, {m['n']} probes", m["peak_rss_mb"], "MB",
                     detail=m) for m in (small, large)]
    rows.append(C.result("record memory", f"peak RSS {large['n']} / {small['n']} probes",
                         large["peak_rss_mb"] / small["peak_rss_mb"], "x", target=TARGET, detail=settings))
    for m in (small, large):
        rows.append(C.result("record memory", f"snapshot per 1,000 probes ({m['n']})",
                             1000 * m["snapshot_seconds"] / m["n"], "s", detail=m))
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print("RESULT " + json.dumps(child(int(sys.argv[2]), sys.argv[3])), flush=True)
    else:
        C.standalone(lambda: main(sys.argv[1:]))
