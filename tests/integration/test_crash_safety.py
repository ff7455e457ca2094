"""A snapshot killed half-way (SIGKILL) leaves every earlier checkpoint readable and no half one visible."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import t3vis
from t3vis.store import schema

TESTS_DIR = str(Path(__file__).resolve().parents[1])
N_TEXTS = 16

CHILD = textwrap.dedent("""
    import hashlib, json, os, sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    import torch
    from conftest import make_labels, make_model, make_texts
    import t3vis
    from t3vis.store import writer as store_writer

    run_dir = Path({run_dir!r})
    state = {{"crash": False}}
    original = store_writer.CheckpointStage.write_heads

    def write_heads(self, arrays, *args):
        if state["crash"]:
            # hidden.npy and outputs.parquet are in the staging folder; heads and meta.json are not
            print("MARKER " + json.dumps({{"staging": str(self.path), "files": sorted(os.listdir(self.path))}}),
                  flush=True)
            time.sleep(600)
        return original(self, arrays, *args)

    store_writer.CheckpointStage.write_heads = write_heads

    def checksums():
        out = {{}}
        for p in sorted((run_dir / "checkpoints").rglob("*")):
            if p.is_file():
                out[str(p.relative_to(run_dir))] = hashlib.sha256(p.read_bytes()).hexdigest()
        return out

    model, tokenizer = make_model("bert", seed=0)
    texts, labels = make_texts({n}), make_labels({n})
    rec = t3vis.Recorder(run_dir, model, tokenizer, texts, labels, batch_size=4)
    rec.snapshot(step=0, epoch=0.0)
    # one training step, so that step 1 differs from step 0
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    out = model(**enc, labels=torch.tensor(labels))
    rec.observe(torch.arange({n}), out.logits, torch.tensor(labels))
    out.loss.backward()
    opt.step()
    opt.zero_grad()
    rec.snapshot(step=1, epoch=1.0)
    print("CHECKSUMS " + json.dumps(checksums()), flush=True)
    with torch.no_grad():
        logits = model(**enc).logits
    rec.observe(torch.arange({n}), logits, torch.tensor(labels))
    state["crash"] = True
    rec.snapshot(step=2, epoch=2.0)
    print("UNREACHABLE", flush=True)
""")


def file_checksums(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((run_dir / "checkpoints").rglob("*")) if p.is_file()}


def read_checkpoint(ck) -> dict:
    out = ck.outputs
    return {"loss": out["loss"].to_numpy().copy(), "pred": out["pred"].to_numpy().copy(),
            "probs": np.stack(out["probs"].to_numpy()).copy(),
            "hidden": np.array(ck.hidden_states), "importance": ck.head_importance.copy(),
            "importance_raw": ck.head_importance_raw.copy(), "entropy": ck.attention_summary("entropy").copy(),
            "metrics": ck.metrics}


def assert_same(a: dict, b: dict) -> None:
    for key in ("loss", "pred", "probs", "hidden", "importance", "importance_raw", "entropy"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert a["metrics"] == b["metrics"]


def start_reader(stream) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump():
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for(lines, prefix: str, timeout: float, seen: list[str]) -> str:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {prefix!r} line from the child in {timeout} s; it printed {seen}"
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        assert line is not None, f"the child exited before printing {prefix!r}; it printed {seen}"
        seen.append(line)
        if line.startswith(prefix + " "):
            return line[len(prefix) + 1:]


@pytest.mark.timeout(300)
def test_sigkill_mid_snapshot_leaves_earlier_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    code = CHILD.format(tests=TESTS_DIR, run_dir=str(run_dir), n=N_TEXTS)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    errors: list[str] = []
    threading.Thread(target=lambda: errors.extend(child.stderr), daemon=True).start()
    seen: list[str] = []
    try:
        lines = start_reader(child.stdout)
        try:
            child_checksums = json.loads(wait_for(lines, "CHECKSUMS", 180, seen))
            marker = json.loads(wait_for(lines, "MARKER", 120, seen))
        except AssertionError:
            child.kill()
            child.wait()
            raise AssertionError(f"child stderr:\n{''.join(errors)[-4000:]}") from None
        # the child is asleep inside snapshot 2, half-way: read what a reader sees now
        before = t3vis.open_run(run_dir)
        assert [c.step for c in before.checkpoints] == [0, 1]
        values_before = {c.step: read_checkpoint(c) for c in before.checkpoints}
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not any(line.startswith("UNREACHABLE") for line in seen)

    # the kill really hit mid-snapshot: a staging folder with part of step 2 in it
    staging = Path(marker["staging"])
    assert staging.parent == run_dir / schema.CHECKPOINTS_DIR
    assert staging.name.startswith(schema.STAGING_PREFIX)
    assert staging.is_dir()
    assert {schema.HIDDEN, schema.OUTPUTS} <= set(os.listdir(staging))
    assert schema.CHECKPOINT_META not in os.listdir(staging)

    # every file of steps 0 and 1 is byte for byte what the child wrote before snapshot 2 began
    after_files = {k: v for k, v in file_checksums(run_dir).items()
                   if not k.startswith(f"{schema.CHECKPOINTS_DIR}/{schema.STAGING_PREFIX}")}
    assert after_files == child_checksums
    assert any(k.endswith(schema.HEADS) for k in child_checksums)

    run = t3vis.open_run(run_dir)
    assert [c.step for c in run.checkpoints] == [0, 1]
    assert not (run_dir / schema.CHECKPOINTS_DIR / schema.checkpoint_dirname(2)).exists()
    with pytest.raises(t3vis.NotFoundError, match=r"\[0, 1\]"):
        run.checkpoint(2)
    values_after = {c.step: read_checkpoint(c) for c in run.checkpoints}
    for step in (0, 1):
        assert_same(values_after[step], values_before[step])
        assert values_after[step]["hidden"].shape == (3, N_TEXTS, 32)
        assert np.isfinite(values_after[step]["loss"]).all()
    # the training step changed the model, so the comparison above compares different things
    assert not np.array_equal(values_after[0]["hidden"], values_after[1]["hidden"])
    # both flushes of training dynamics reached the disk (the second at the start of snapshot 2)
    dyn = run.dynamics()
    assert sorted(dyn["id"]) == list(range(N_TEXTS))
    assert (dyn["epochs"] == 2).all()

    # a new recorder on the same folder records step 2 and clears the stale staging folder
    from conftest import make_labels, make_model, make_texts

    model, tokenizer = make_model("bert", seed=0)   # the child's weights at step 0
    rec = t3vis.Recorder(run_dir, model, tokenizer, make_texts(N_TEXTS), make_labels(N_TEXTS), batch_size=4,
                         exist_ok=True, keep_weights="all")   # step 0's files must stay as they were
    rec.snapshot(step=2, epoch=2.0)
    assert not staging.exists()
    leftovers = [p.name for p in (run_dir / schema.CHECKPOINTS_DIR).iterdir()
                 if p.name.startswith(schema.STAGING_PREFIX)]
    assert leftovers == []
    run = t3vis.open_run(run_dir)
    assert [c.step for c in run.checkpoints] == [0, 1, 2]
    new = read_checkpoint(run.checkpoint(2))
    # same weights and texts as the child's step 0, so the same numbers
    np.testing.assert_array_equal(new["pred"], values_before[0]["pred"])
    np.testing.assert_allclose(new["probs"], values_before[0]["probs"], atol=1e-5)
    np.testing.assert_allclose(new["hidden"].astype(np.float32), values_before[0]["hidden"].astype(np.float32),
                               atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(new["importance_raw"], values_before[0]["importance_raw"], rtol=1e-4)
    # and steps 0 and 1 are still untouched
    assert {k: v for k, v in file_checksums(run_dir).items() if "step-00000002" not in k} == child_checksums


# -- re-recording a step, killed at every point of the replacement ---------------------------------

KILLED = 86     # the child's exit status when it killed itself
REPLACE_CHILD = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import numpy as np
    import pandas as pd
    from t3vis.store.writer import RunWriter

    run_dir, kill_at, p = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    layers, heads, dims, n = p["layers"], p["heads"], p["dims"], p["n"]
    state = {"armed": False, "calls": 0}

    def killing(name, real):
        def wrapper(*args, **kwargs):
            if state["armed"]:
                state["calls"] += 1
                if state["calls"] == kill_at:   # as abrupt as SIGKILL: no finally, no cleanup
                    sys.stderr.write("KILLED before " + name + repr(args[:2]) + "\\n")
                    sys.stderr.flush()
                    os._exit(p["killed"])
            return real(*args, **kwargs)
        return wrapper

    # every call that changes the file system (shutil.rmtree goes through unlink and rmdir)
    for name in ("replace", "rename", "unlink", "rmdir"):
        setattr(os, name, killing(name, getattr(os, name)))

    writer = RunWriter(run_dir)
    with writer.checkpoint(p["step"], epoch=None, metrics={"value": 2.0}) as stage:
        hidden = stage.hidden_array(layers + 1, n, dims)
        hidden[:] = 2.0
        hidden.flush()
        del hidden
        stage.write_outputs(pd.DataFrame({"id": [1, 2], "pred": [0, 1], "loss": [2.0, 2.0],
                                          "gold_prob": [0.5, 0.5], "correct": [True, True],
                                          "nan": [False, False], "probs": [np.array([0.5, 0.5])] * n}))
        stage.write_heads({"importance": np.full((layers, heads), 2.0, np.float32),
                           "importance_raw": np.full((layers, heads), 2.0, np.float32),
                           "thumbnails": np.full((layers, heads, 2, 2), 2.0, np.float16)})
        stage.write_gate_grads(np.full((n, layers, heads), 2.0, np.float32))
        state["armed"] = True   # from here on: the checkpoint's meta.json, then the replacement
    print("CALLS", state["calls"], flush=True)
""")
R_LAYERS, R_HEADS, R_DIMS, R_N, R_STEP = 1, 2, 3, 2, 5


def write_small_version(writer, value: float, step: int = R_STEP) -> None:
    import pandas as pd

    with writer.checkpoint(step, epoch=None, metrics={"value": value}) as stage:
        hidden = stage.hidden_array(R_LAYERS + 1, R_N, R_DIMS)
        hidden[:] = value
        hidden.flush()
        del hidden
        stage.write_outputs(pd.DataFrame({"id": [1, 2], "pred": [0, 1], "loss": [value, value],
                                          "gold_prob": [0.5, 0.5], "correct": [True, True], "nan": [False, False],
                                          "probs": [np.array([0.5, 0.5])] * R_N}))
        stage.write_heads({"importance": np.full((R_LAYERS, R_HEADS), value, np.float32),
                           "importance_raw": np.full((R_LAYERS, R_HEADS), value, np.float32),
                           "thumbnails": np.full((R_LAYERS, R_HEADS, 2, 2), value, np.float16)})
        stage.write_gate_grads(np.full((R_N, R_LAYERS, R_HEADS), value, np.float32))


def small_version(run_dir: Path, step: int = R_STEP) -> float:
    """Which complete copy of `step` a reader sees (1.0 old, 2.0 new); fails on a partial one."""
    ck = t3vis.open_run(run_dir).checkpoint(step)
    value = ck.metrics["value"]
    np.testing.assert_array_equal(ck.hidden_states, np.full((R_LAYERS + 1, R_N, R_DIMS), value))
    np.testing.assert_array_equal(ck.outputs["loss"].to_numpy(), [value, value])
    np.testing.assert_array_equal(ck.head_importance, np.full((R_LAYERS, R_HEADS), value))
    np.testing.assert_array_equal(ck.attention_thumbnails, np.full((R_LAYERS, R_HEADS, 2, 2), value))
    np.testing.assert_array_equal(ck.example_gate_gradients(), np.full((R_N, R_LAYERS, R_HEADS), value))
    return value


@pytest.mark.timeout(300)
def test_a_kill_at_any_point_of_rerecording_a_step_keeps_one_complete_copy(tmp_path):
    import pandas as pd

    from t3vis.store.writer import RunWriter

    pristine = tmp_path / "pristine"
    writer = RunWriter.create(pristine, {
        "t3vis_version": "test", "model": {"name_or_path": "hand-made"}, "task": "sequence-classification",
        "label_names": ["neg", "pos"], "num_layers": R_LAYERS, "num_heads": R_HEADS, "hidden_size": R_DIMS,
        "pooling": "cls", "max_length": 8, "thumbnail_size": 2, "num_probe": R_N,
    }, pd.DataFrame({"id": [1, 2], "split": ["train", "validation"], "text": ["a b", "c"], "label": [0, 1],
                     "probe_row": [0, 1]}))
    write_small_version(writer, 1.0)
    params = json.dumps({"killed": KILLED, "step": R_STEP, "layers": R_LAYERS, "heads": R_HEADS, "dims": R_DIMS,
                         "n": R_N})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(t3vis.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    seen: list[tuple[str, float]] = []    # (where the child died, the version read after recovery)
    for kill_at in range(1, 40):
        run_dir = tmp_path / f"killed-at-{kill_at}"
        shutil.copytree(pristine, run_dir)
        child = subprocess.run([sys.executable, "-c", REPLACE_CHILD, str(run_dir), str(kill_at), params],
                               capture_output=True, text=True, timeout=120, env=env)
        finished = child.returncode == 0
        assert finished or child.returncode == KILLED, child.stderr[-3000:]
        where = "finished" if finished else child.stderr.strip().splitlines()[-1]
        # a reader before any recovery: step 5 complete (either copy), or absent between the renames
        steps = [c.step for c in t3vis.open_run(run_dir).checkpoints]
        assert steps in ([R_STEP], []), (where, steps)
        if steps:
            assert small_version(run_dir) in (1.0, 2.0), where
        # the next writer recovers: one complete copy, and a further write leaves nothing hidden
        writer = RunWriter(run_dir)
        version = small_version(run_dir)
        seen.append((where, version))
        write_small_version(writer, 3.0, step=R_STEP + 1)
        assert sorted(p.name for p in (run_dir / schema.CHECKPOINTS_DIR).iterdir()) == [
            schema.checkpoint_dirname(R_STEP), schema.checkpoint_dirname(R_STEP + 1)], where
        assert small_version(run_dir) == version
        shutil.rmtree(run_dir)
        if finished:
            break
    else:
        raise AssertionError(f"the child never finished; killed at {seen}")
    versions = [v for _, v in seen]
    assert versions[-1] == 2.0 and seen[-1][0] == "finished"
    # old copy until the new one is renamed in, the new copy from then on, never neither
    first_new = versions.index(2.0)
    assert set(versions[:first_new]) == {1.0} and set(versions[first_new:]) == {2.0}, seen
    killed_in = " ".join(where for where, _ in seen)
    assert killed_in.count("KILLED before replace") >= 3, seen    # aside, in, to the discard name
    assert "KILLED before unlink" in killed_in and "KILLED before rmdir" in killed_in, seen
    # the kill between the two renames is among them, and it read as the old copy
    renamed_in = [i for i, (where, _) in enumerate(seen) if where.startswith("KILLED before replace")
                  and where.endswith(f"/{schema.checkpoint_dirname(R_STEP)}'))")]
    assert len(renamed_in) == 1 and versions[renamed_in[0]] == 1.0, seen
