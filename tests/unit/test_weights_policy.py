"""Recorder(keep_weights=...): which checkpoints keep their weights on disk, and a crash-safe drop."""

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from conftest import make_labels, make_model, make_texts

import t3vis
from t3vis.errors import InvalidInputError
from t3vis.record.weights_policy import WeightsPolicy

STEPS = (0, 10, 20, 30, 40)


def _recorder(run_dir: Path, **options):
    model, tokenizer = make_model("bert")
    return t3vis.Recorder(run_dir, model, tokenizer, make_texts(6), make_labels(6), batch_size=8, **options)


def _meta_weights(run_dir: Path, step: int):
    return json.loads((run_dir / "checkpoints" / f"step-{step:08d}" / "meta.json").read_text())["weights"]


def _on_disk(run_dir: Path) -> set[int]:
    """The steps whose checkpoint folder holds a weights/ folder."""
    return {int(p.parent.name[len("step-"):]) for p in (run_dir / "checkpoints").glob("step-*/weights")}


def _size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(root, name)) for name in files)
    return total


# after each of the five snapshots (steps 0, 10, 20, 30, 40): the steps that keep weights, worked out by hand
KEPT_AFTER_EACH = {
    "all": [{0}, {0, 10}, {0, 10, 20}, {0, 10, 20, 30}, {0, 10, 20, 30, 40}],
    "none": [set(), set(), set(), set(), set()],
    # index 0 and 3 are multiples of 3; the latest always stays
    "every:3": [{0}, {0, 10}, {0, 20}, {0, 30}, {0, 30, 40}],
    "every:2": [{0}, {0, 10}, {0, 20}, {0, 20, 30}, {0, 20, 40}],
    "last:2": [{0}, {0, 10}, {10, 20}, {20, 30}, {30, 40}],
    "last:1": [{0}, {10}, {20}, {30}, {40}],
}


@pytest.mark.parametrize("policy", sorted(KEPT_AFTER_EACH))
def test_each_policy_keeps_exactly_the_expected_checkpoints(tmp_path, policy):
    run_dir = tmp_path / "run"
    rec = _recorder(run_dir, keep_weights=policy)
    for i, step in enumerate(STEPS):
        summary = rec.snapshot(step=step)
        expected = KEPT_AFTER_EACH[policy][i]
        assert _on_disk(run_dir) == expected, (policy, step)
        for earlier in STEPS[:i + 1]:
            assert _meta_weights(run_dir, earlier) == ("weights" if earlier in expected else None)
        own = run_dir / "checkpoints" / f"step-{step:08d}" / "weights"
        assert summary.weights_bytes == (_size(own) if step in expected else 0)
        assert summary.run_weights_bytes == sum(
            _size(run_dir / "checkpoints" / f"step-{s:08d}" / "weights") for s in expected)
    rec.close()
    run = t3vis.open_run(run_dir)
    assert {c.step for c in run.checkpoints if c.has_weights(confined=True)} == KEPT_AFTER_EACH[policy][-1]


def test_the_default_keeps_the_last_two_and_logs_the_bytes(tmp_path, caplog):
    run_dir = tmp_path / "run"
    rec = _recorder(run_dir)
    for step in STEPS:
        rec.snapshot(step=step)
    assert _on_disk(run_dir) == {30, 40}
    with caplog.at_level(logging.INFO, logger="t3vis.record"):
        summary = rec.snapshot(step=50)
    assert _on_disk(run_dir) == {40, 50}
    kept = sum(_size(run_dir / "checkpoints" / f"step-{s:08d}" / "weights") for s in (40, 50))
    assert summary.run_weights_bytes == kept > 0
    assert f"the run keeps {kept / 1e6:.1f} MB of weights (keep_weights='last:2')" in caplog.text


def test_save_weights_false_still_means_none(tmp_path):
    run_dir = tmp_path / "run"
    rec = _recorder(run_dir, save_weights=False)
    for step in STEPS[:3]:
        assert rec.snapshot(step=step).run_weights_bytes == 0
    assert _on_disk(run_dir) == set()
    assert all(_meta_weights(run_dir, step) is None for step in STEPS[:3])


@pytest.mark.parametrize("text", ["", "keep", "ALL", "last", "last:", "last:0", "every:0", "every:-1",
                                  "last:2.5", "every: 2", "first:2", 3, None])
def test_invalid_policies_are_refused_naming_the_accepted_forms(text):
    with pytest.raises(InvalidInputError) as error:
        WeightsPolicy.parse(text)
    message = str(error.value)
    assert repr(text) in message and "'every:K'" in message and "'last:N'" in message and "'none'" in message


def test_recorder_refuses_a_bad_policy_and_a_contradiction(tmp_path):
    with pytest.raises(InvalidInputError, match="keep_weights='last:0'"):
        _recorder(tmp_path / "a", keep_weights="last:0")
    with pytest.raises(InvalidInputError, match="contradict"):
        _recorder(tmp_path / "b", save_weights=False, keep_weights="all")
    assert not (tmp_path / "a" / "run.json").exists()


def test_a_crash_while_deleting_leaves_meta_null_and_the_run_readable(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    rec = _recorder(run_dir, keep_weights="last:1")
    rec.snapshot(step=0)
    real_rmtree = shutil.rmtree

    def crash_on_weights(path, *args, **kwargs):
        if Path(path).name == "weights":
            raise OSError("simulated crash while deleting weights")
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", crash_on_weights)
    with pytest.raises(OSError, match="simulated crash"):
        rec.snapshot(step=10)
    # meta.json was rewritten before the folder went: it says null while the folder is still there
    assert _meta_weights(run_dir, 0) is None and (run_dir / "checkpoints" / "step-00000000" / "weights").is_dir()
    run = t3vis.open_run(run_dir)
    assert [c.step for c in run.checkpoints] == [0, 10]
    assert [c.has_weights(confined=True) for c in run.checkpoints] == [False, True]
    run.checkpoints[1].load_model(confined=True)

    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    rec.snapshot(step=20)   # the next snapshot removes the leftover folder
    assert _on_disk(run_dir) == {20}


def test_referenced_weights_are_never_deleted(tmp_path):
    model, tokenizer = make_model("bert")
    elsewhere = tmp_path / "trainer-out" / "checkpoint-0"
    model.save_pretrained(elsewhere)
    tokenizer.save_pretrained(elsewhere)
    run_dir = tmp_path / "run"
    rec = t3vis.Recorder(run_dir, model, tokenizer, make_texts(6), make_labels(6), batch_size=8,
                         keep_weights="last:1")
    first = rec.snapshot(step=0, weights_location=elsewhere)
    assert first.weights_bytes == 0 and first.run_weights_bytes == 0   # nothing copied
    for step in STEPS[1:]:
        rec.snapshot(step=step)
    assert (elsewhere / "model.safetensors").is_file()
    assert _meta_weights(run_dir, 0) == str(elsewhere)
    assert _on_disk(run_dir) == {40}
    run = t3vis.open_run(run_dir)
    assert run.checkpoints[0].has_weights(confined=True)


def test_a_damaged_meta_json_is_left_alone_not_taken_for_weights_null(tmp_path):
    run_dir = tmp_path / "run"
    rec = _recorder(run_dir, keep_weights="last:1")
    rec.snapshot(step=0)
    (run_dir / "checkpoints" / "step-00000000" / "meta.json").write_text("{not json")
    rec.snapshot(step=10)
    # unreadable: the writer cannot tell its weights are its own, so it deletes nothing there
    assert _on_disk(run_dir) == {0, 10}
