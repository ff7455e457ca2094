"""The viewer started from the training script: Recorder(serve=True) and T3VisCallback(serve=True)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import make_labels, make_model, make_texts

import t3vis

ROOT = Path(__file__).resolve().parents[2]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _until_listed(version_url: str, steps: list[int], timeout_s: float = 10.0) -> float:
    """Seconds until the served run lists exactly these checkpoints."""
    t0 = time.monotonic()
    while _get(version_url)["steps"] != steps:
        assert time.monotonic() - t0 < timeout_s, f"the viewer never listed {steps}"
        time.sleep(0.05)
    return time.monotonic() - t0


def _taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def test_a_recorder_serves_its_run_on_the_next_free_port_while_it_trains(tmp_path, capsys):
    taken = _taken_port()
    port = taken.getsockname()[1]
    try:
        model, tokenizer = make_model("bert")
        rec = t3vis.Recorder(tmp_path / "live", model, tokenizer, make_texts(6), make_labels(6), serve=True,
                             serve_port=port)
        printed = capsys.readouterr().out
        assert printed.count("t3vis: viewing") == 1 and f"port {port} was taken" in printed
        assert rec.viewer is not None and rec.viewer.port != port
        version = f"{rec.viewer.url}/api/runs/live/version"
        assert _get(version)["steps"] == []
        rec.snapshot(step=3)
        assert _until_listed(version, [3]) <= 2.0      # the page's poll sees the checkpoint
        url = rec.viewer.url
        rec.close()
        assert rec.viewer is None
        with pytest.raises(urllib.error.URLError):    # closed with the recorder
            _get(f"{url}/api/runs")
    finally:
        taken.close()


def test_the_trainer_callback_serves_from_the_start_of_training(tmp_path, capsys):
    from transformers import Trainer, TrainingArguments

    from t3vis.integrations.transformers import T3VisCallback

    model, tokenizer = make_model("bert")
    texts, labels = make_texts(8), make_labels(8)
    enc = tokenizer(texts, padding=True, truncation=True, max_length=16)
    data = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": labels[i]}
            for i in range(len(texts))]
    seen: list[tuple[list[int], float]] = []

    class Watch(T3VisCallback):
        def on_step_end(self, args, state, control, **kwargs):     # the viewer answers while training runs
            recorded = [c.step for c in t3vis.open_run(self.run_dir).checkpoints]
            seen.append((recorded, _until_listed(f"{self.recorder.viewer.url}/api/runs/run/version", recorded)))

    callback = Watch(tmp_path / "run", tokenizer, texts, labels, serve=True, serve_port=0, snapshot_on="epoch")
    args = TrainingArguments(output_dir=str(tmp_path / "out"), num_train_epochs=2, per_device_train_batch_size=4,
                             save_strategy="no", report_to=[], use_cpu=True, logging_strategy="no")
    Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
    assert capsys.readouterr().out.count("t3vis: viewing") == 1
    assert len(seen) == 4 and seen[0][0] == [0]                  # step 0 recorded at the start of training
    assert max(waited for _, waited in seen) <= 2.0              # each checkpoint listed within 2 s
    callback.recorder.close()


def test_keep_serving_outlives_the_script(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from conftest import make_labels, make_model, make_texts
import t3vis
model, tokenizer = make_model("bert")
rec = t3vis.Recorder({str(tmp_path / 'kept')!r}, model, tokenizer, make_texts(4), make_labels(4), serve=True,
                     serve_port=0, keep_serving=True)
rec.snapshot(step=1)
rec.close()
print("script done", flush=True)
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while not any("still serving" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())
        url = next(line for line in lines if "t3vis: viewing" in line).split(" at ")[1].split("/?")[0]
        time.sleep(1.0)
        assert proc.poll() is None                                  # the script ended; the viewer did not
        assert _get(f"{url}/api/runs/kept/version")["steps"] == [1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)

