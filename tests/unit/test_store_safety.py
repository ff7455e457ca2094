"""The writer loses nothing: re-recording a step never leaves both copies missing, and creating a
run never overwrites a file the writer did not write."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest

import t3vis
from t3vis.errors import InvalidInputError
from t3vis.store import atomic, schema
from t3vis.store import writer as store_writer
from t3vis.store.writer import CheckpointStage, RunWriter

L, H, D, N = 1, 2, 3, 2   # layers, heads, hidden size, probe examples
STEP = 5


def run_meta() -> dict:
    return {"t3vis_version": "test", "model": {"name_or_path": "hand-made"}, "task": "sequence-classification",
            "label_names": ["neg", "pos"], "num_layers": L, "num_heads": H, "hidden_size": D, "pooling": "cls",
            "max_length": 8, "thumbnail_size": 2, "num_probe": N}


def examples_frame() -> pd.DataFrame:
    return pd.DataFrame({"id": [1, 2], "split": ["train", "validation"], "text": ["a b", "c"], "label": [0, 1],
                         "probe_row": [0, 1]})


def fill(stage: CheckpointStage, value: float) -> None:
    """Every array of the checkpoint holds `value`, so that a copy is recognisable."""
    hidden = stage.hidden_array(L + 1, N, D)
    hidden[:] = value
    hidden.flush()
    del hidden
    stage.write_outputs(pd.DataFrame({"id": [1, 2], "pred": [0, 1], "loss": [value, value],
                                      "gold_prob": [0.5, 0.5], "correct": [True, True], "nan": [False, False],
                                      "probs": [np.array([0.5, 0.5])] * N}))
    stage.write_heads({"importance": np.full((L, H), value, np.float32),
                       "importance_raw": np.full((L, H), value, np.float32),
                       "thumbnails": np.full((L, H, 2, 2), value, np.float16)})
    stage.write_gate_grads(np.full((N, L, H), value, np.float32))


def write_version(writer: RunWriter, value: float, step: int = STEP) -> None:
    with writer.checkpoint(step, epoch=None, metrics={"value": value}) as stage:
        fill(stage, value)


def version_of(run_dir, step: int = STEP) -> float:
    """The value of the complete copy of `step` that a reader sees; fails on a partial copy."""
    ck = t3vis.open_run(run_dir).checkpoint(step)
    value = ck.metrics["value"]
    np.testing.assert_array_equal(ck.hidden_states, np.full((L + 1, N, D), value, np.float16))
    np.testing.assert_array_equal(ck.outputs["loss"].to_numpy(), [value, value])
    np.testing.assert_array_equal(ck.head_importance, np.full((L, H), value))
    np.testing.assert_array_equal(ck.attention_thumbnails, np.full((L, H, 2, 2), value))
    np.testing.assert_array_equal(ck.example_gate_gradients(), np.full((N, L, H), value))
    return value


def hidden_names(run_dir) -> list[str]:
    return sorted(p.name for p in (run_dir / schema.CHECKPOINTS_DIR).iterdir() if p.name.startswith("."))


@pytest.fixture
def run_with_old_copy(tmp_path):
    writer = RunWriter.create(tmp_path / "run", run_meta(), examples_frame())
    write_version(writer, 1.0)
    return tmp_path / "run"


# -- names -------------------------------------------------------------------------------------


def test_staging_and_trash_names_are_never_read_as_checkpoints():
    final = schema.checkpoint_dirname(STEP)
    assert schema.parse_checkpoint_dirname(final) == STEP
    assert schema.parse_checkpoint_dirname(schema.TRASH_PREFIX + final) is None
    assert schema.parse_checkpoint_dirname(schema.STAGING_PREFIX + "abc123") is None
    assert schema.parse_checkpoint_dirname(schema.STAGING_PREFIX + "discard-0a1b2c") is None


# -- re-recording a step -------------------------------------------------------------------------


def test_rerecording_replaces_the_copy_and_leaves_nothing_hidden(run_with_old_copy):
    write_version(RunWriter(run_with_old_copy), 2.0)
    assert version_of(run_with_old_copy) == 2.0
    assert hidden_names(run_with_old_copy) == []


# Each step of the replacement (store/atomic.py), failing with an error; what the reader must see
# after it, and whether the write reports the error. The new copy counts as written once it is in place.
STEPS = [  # (function that fails, which call of it, version read after, raises)
    ("replace", 1, 1.0, True),     # old -> trash
    ("replace", 2, 1.0, True),     # staging -> final
    ("replace", 3, 2.0, False),    # trash -> discard name
    ("rmtree", 1, 2.0, False),     # deleting the discarded copy
]


@pytest.mark.parametrize("function, call, expected, raises", STEPS)
def test_an_error_at_any_step_of_a_replacement_keeps_one_complete_copy(run_with_old_copy, monkeypatch,
                                                                      function, call, expected, raises):
    writer = RunWriter(run_with_old_copy)
    real = {"replace": os.replace, "rmtree": shutil.rmtree}[function]
    calls = []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) == call:
            raise OSError(f"injected failure of {function} call {call}")
        return real(*args, **kwargs)

    def write_new_copy():
        # armed only once the new copy is staged: the calls counted are the replacement's
        with writer.checkpoint(STEP, epoch=None, metrics={"value": 2.0}) as stage:
            fill(stage, 2.0)
            if function == "replace":
                monkeypatch.setattr(atomic.os, "replace", failing)
            else:
                monkeypatch.setattr(atomic.shutil, "rmtree", failing)

    if raises:
        with pytest.raises(OSError, match="injected failure"):
            write_new_copy()
    else:
        write_new_copy()
    monkeypatch.undo()
    assert len(calls) >= call
    assert version_of(run_with_old_copy) == expected
    # the next writer finishes any cleanup the failure left
    RunWriter(run_with_old_copy)
    assert [n for n in hidden_names(run_with_old_copy) if n.startswith(schema.TRASH_PREFIX)] == []
    write_version(RunWriter(run_with_old_copy), 3.0, step=STEP + 1)
    assert hidden_names(run_with_old_copy) == []
    assert version_of(run_with_old_copy) == expected


def test_a_copy_renamed_aside_is_restored_when_the_writer_opens(run_with_old_copy):
    # a kill between "old -> trash" and "staging -> final": the final name is missing
    folder = run_with_old_copy / schema.CHECKPOINTS_DIR
    final = folder / schema.checkpoint_dirname(STEP)
    os.replace(final, folder / (schema.TRASH_PREFIX + final.name))
    staged = folder / (schema.STAGING_PREFIX + "killed")
    staged.mkdir()
    (staged / schema.HIDDEN).write_bytes(b"the new copy, complete or not")
    assert t3vis.open_run(run_with_old_copy).checkpoints == []   # neither hidden name reads as a checkpoint
    RunWriter(run_with_old_copy)
    assert version_of(run_with_old_copy) == 1.0
    assert hidden_names(run_with_old_copy) == [staged.name]      # harmless; the next write clears it
    write_version(RunWriter(run_with_old_copy), 3.0, step=STEP + 1)
    assert hidden_names(run_with_old_copy) == []


def test_an_old_copy_beside_its_replacement_is_discarded(run_with_old_copy):
    # a kill after "staging -> final", before the old copy was deleted
    folder = run_with_old_copy / schema.CHECKPOINTS_DIR
    final = folder / schema.checkpoint_dirname(STEP)
    trash = folder / (schema.TRASH_PREFIX + final.name)
    shutil.copytree(final, trash)
    write_version(RunWriter(run_with_old_copy), 2.0, step=STEP + 1)   # another step: recovery runs first
    assert not trash.exists()
    assert version_of(run_with_old_copy) == 1.0
    assert hidden_names(run_with_old_copy) == []


# -- creating a run ---------------------------------------------------------------------------------


@pytest.mark.parametrize("user_file", ["notes.txt", schema.EXAMPLES, ".hidden"])
def test_create_never_overwrites_a_users_files(tmp_path, user_file):
    folder = tmp_path / "mine"
    (folder / "data").mkdir(parents=True)
    content = b"the user's own bytes \x00\xff\n"
    (folder / user_file).write_bytes(content)
    (folder / "data" / "x.csv").write_bytes(b"a,b\n1,2\n")
    with pytest.raises(InvalidInputError) as info:
        RunWriter.create(folder, run_meta(), examples_frame())
    message = str(info.value)
    assert str(folder) in message and "not empty" in message
    assert user_file in message and "data" in message
    assert "choose a new folder" in message and "empty this one" in message
    assert sorted(p.name for p in folder.iterdir()) == sorted([user_file, "data"])   # nothing added
    assert (folder / user_file).read_bytes() == content
    assert (folder / "data" / "x.csv").read_bytes() == b"a,b\n1,2\n"


def test_create_lists_a_few_of_many_files(tmp_path):
    folder = tmp_path / "busy"
    folder.mkdir()
    for i in range(8):
        (folder / f"f{i}.txt").write_text("x")
    with pytest.raises(InvalidInputError, match=r"f0\.txt, f1\.txt, f2\.txt, f3\.txt, f4\.txt and 3 more"):
        RunWriter.create(folder, run_meta(), examples_frame())


def test_create_refuses_an_existing_run(run_with_old_copy):
    examples_before = (run_with_old_copy / schema.EXAMPLES).read_bytes()
    meta_before = (run_with_old_copy / schema.RUN_META).read_bytes()
    with pytest.raises(InvalidInputError, match="already holds a t3vis run") as info:
        RunWriter.create(run_with_old_copy, run_meta(), examples_frame().iloc[:1])
    assert str(run_with_old_copy) in str(info.value) and "choose a new folder" in str(info.value)
    assert (run_with_old_copy / schema.EXAMPLES).read_bytes() == examples_before
    assert (run_with_old_copy / schema.RUN_META).read_bytes() == meta_before
    assert version_of(run_with_old_copy) == 1.0


def test_create_refuses_a_file(tmp_path):
    target = tmp_path / "a-file"
    target.write_bytes(b"keep")
    with pytest.raises(InvalidInputError, match="it is a file, not a folder"):
        RunWriter.create(target, run_meta(), examples_frame())
    assert target.read_bytes() == b"keep"


@pytest.mark.parametrize("exists", [False, True])
def test_create_in_a_missing_or_empty_folder(tmp_path, exists):
    folder = tmp_path / "new" / "run"
    if exists:
        folder.mkdir(parents=True)
    RunWriter.create(folder, run_meta(), examples_frame())
    run = t3vis.open_run(folder)
    assert run.examples["id"].tolist() == [1, 2]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [schema.RUN_META, schema.EXAMPLES, schema.CHECKPOINTS_DIR, schema.DYNAMICS_DIR, schema.CACHE_DIR])


def test_create_again_after_an_interrupted_create(tmp_path, monkeypatch):
    folder = tmp_path / "run"

    def killed(path, obj):
        raise KeyboardInterrupt("interrupted before run.json")

    monkeypatch.setattr(store_writer, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        RunWriter.create(folder, run_meta(), examples_frame())
    monkeypatch.undo()
    assert (folder / schema.EXAMPLES).exists() and not (folder / schema.RUN_META).exists()
    # what is there is the interrupted create's own: a second create may write over it
    RunWriter.create(folder, run_meta(), examples_frame().iloc[:1])
    assert t3vis.open_run(folder).examples["id"].tolist() == [1]
    assert not any(p.name.startswith(".") for p in folder.iterdir())
