"""Recorder.observe(): a bad call is refused at the call and harms nothing; explicit epochs;
a failing snapshot or write keeps the observations made before it."""

import numpy as np
import pytest
import torch
from conftest import make_labels, make_model, make_texts

import t3vis
from t3vis.errors import InvalidInputError
from t3vis.record import recorder as recorder_module
from t3vis.tasks import classification as classification_module

LOGITS = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])


def _recorder(tmp_path, **kwargs):
    model, tokenizer = make_model("bert")
    return t3vis.Recorder(tmp_path / "run", model, tokenizer, make_texts(6), make_labels(6), batch_size=4,
                          save_weights=False, **kwargs)


def _observations(tmp_path):
    return t3vis.open_run(tmp_path / "run").dynamics_observations()


@pytest.mark.parametrize("ids, logits, labels, kwargs, message", [
    ([7, 8], LOGITS, [0, 1, 1], {}, r"ids has shape \(2,\) but logits have 3 rows"),
    ([7, 8, 9, 10], LOGITS, [0, 1, 1], {}, r"ids has shape \(4,\) but logits have 3 rows"),
    ([[7, 8, 9]], LOGITS, [0, 1, 1], {}, r"ids has shape \(1, 3\)"),
    ([7.0, 8.0, 9.0], LOGITS, [0, 1, 1], {}, "ids must be integers, got float64"),
    (torch.tensor([7.0, 8.0, 9.0]), LOGITS, [0, 1, 1], {}, "ids must be integers, got a torch.float32 tensor"),
    (["a", "b", "c"], LOGITS, [0, 1, 1], {}, "ids must be integers"),
    ([True, False, True], LOGITS, [0, 1, 1], {}, "ids must be integers, got bool"),
    ([7, 8, 9], LOGITS, [0, 1], {}, r"labels has shape \(2,\) but logits have 3 rows"),
    ([7, 8, 9], LOGITS, [0.0, 1.0, 1.0], {}, "labels must be integers"),
    ([7, 8, 9], LOGITS, [0, 2, 1], {}, r"labels\[1\] = 2 is outside the model's classes 0..1"),
    ([7, 8, 9], LOGITS, torch.tensor([0, -1, 1]), {}, r"labels\[1\] = -1 is outside"),
    ([7, 8, 9], LOGITS[:, :1], [0, 1, 1], {}, r"logits have shape \(3, 1\); expected \(batch, 2\)"),
    ([7, 8, 9], LOGITS.view(-1), [0, 1, 1], {}, r"logits have shape \(6,\); expected \(batch, 2\)"),
    ([7, 8, 9], LOGITS.view(1, 3, 2), [0, 1, 1], {}, r"logits have shape \(1, 3, 2\)"),
    ([7, 8, 9], [["x", "y"]] * 3, [0, 1, 1], {}, "logits of type list are not numbers"),
    ([7, 8, 9], LOGITS, [0, 1, 1], {"epoch": -1}, "epoch=-1"),
    ([7, 8, 9], LOGITS, [0, 1, 1], {"epoch": float("nan")}, "epoch=nan"),
    ([7, 8, 9], LOGITS, [0, 1, 1], {"epoch": "1"}, "epoch='1'"),
    ([7, 8, 9], LOGITS, [0, 1, 1], {"step": 2.5}, "step=2.5"),
])
def test_a_bad_call_is_refused_and_leaves_the_recording_whole(tmp_path, ids, logits, labels, kwargs, message):
    rec = _recorder(tmp_path)
    rec.observe([1, 2], LOGITS[:2], [0, 0], epoch=0)
    with pytest.raises(InvalidInputError, match=message):
        rec.observe(ids, logits, labels, **kwargs)
    rec.observe([3], LOGITS[2:], [1], epoch=0)
    rec.snapshot(step=1)            # raised "All arrays must be of the same length" before
    rec.close()
    obs = _observations(tmp_path)
    assert obs["id"].tolist() == [1, 2, 3]
    assert obs["step"].tolist() == [1, 1, 2]   # the refused call was not counted as a step either
    assert [c.step for c in t3vis.open_run(tmp_path / "run").checkpoints] == [1]


def test_tensors_arrays_and_lists_record_the_same(tmp_path):
    rec = _recorder(tmp_path)
    rec.observe(torch.tensor([7, 8, 9]), LOGITS, torch.tensor([0, 0, 1]), epoch=0, step=1)
    rec.observe(np.array([7, 8, 9], dtype=np.int32), LOGITS.numpy(), np.array([0, 0, 1]), epoch=1, step=2)
    rec.observe([7, 8, 9], LOGITS.tolist(), [0, 0, 1], epoch=2, step=3)
    rec.close()
    obs = _observations(tmp_path)
    # softmax of (2, 0) is (0.8808, 0.1192); of (1, 1) is (0.5, 0.5)
    expected = [0.880797, 0.119203, 0.5]
    for epoch in range(3):
        one = obs[obs["epoch"] == epoch]
        assert one["id"].tolist() == [7, 8, 9]
        np.testing.assert_allclose(one["gold_prob"], expected, rtol=1e-5)
        assert one["correct"].tolist() == [True, False, False]   # a tie (1, 1) predicts class 0, not the gold 1
    assert sorted(obs["step"].unique()) == [1, 2, 3]


@pytest.mark.parametrize("progress, expected", [
    # 4 steps per epoch, the progress at the start of each step as the Trainer holds it
    ([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0], [0, 0, 0, 0, 1, 1, 1, 1, 2]),
    ([0, 1, 2], [0, 1, 2]),                                     # whole epochs from a plain loop
    ([0.999999, 1.000001], [0, 1]),                             # well inside an epoch: not rounded
    ([49 * (1 / 49), 3 * 0.1 / 0.3], [1, 1]),                   # a whole epoch summed in floats, just below 1
    ([np.float32(1.5), np.int64(2)], [1, 2]),
])
def test_an_observation_counts_in_the_epoch_its_step_starts_in(tmp_path, progress, expected):
    assert 49 * (1 / 49) < 1   # the float trap the tolerance is for
    rec = _recorder(tmp_path)
    for step, epoch in enumerate(progress):
        rec.observe([step], LOGITS[:1], [0], epoch=epoch, step=step)
    rec.close()
    obs = _observations(tmp_path).sort_values("step")
    assert obs["epoch"].tolist() == expected


def test_explicit_epochs_give_the_data_map_its_epochs_even_when_an_example_repeats(tmp_path):
    rec = _recorder(tmp_path)
    # example 5 appears twice in epoch 0 (oversampled): with epochs given it is still one epoch
    rec.observe([5, 5, 6], LOGITS, [0, 0, 1], epoch=0)
    rec.observe([5, 6], LOGITS[:2], [0, 1], epoch=1)
    rec.close()
    dyn = t3vis.open_run(tmp_path / "run").dynamics().set_index("id")
    assert dyn.loc[5, "epochs"] == 2 and dyn.loc[6, "epochs"] == 2
    # epoch 0 of example 5: mean of 0.8808 and 0.1192 = 0.5; epoch 1: 0.8808
    assert dyn.loc[5, "confidence"] == pytest.approx((0.5 + 0.880797) / 2, rel=1e-5)


def test_a_failing_probe_pass_keeps_the_observations_before_it(tmp_path, monkeypatch):
    rec = _recorder(tmp_path)
    rec.observe([1, 2, 3], LOGITS, [0, 0, 1], epoch=0)
    real_probe = recorder_module.probe_examples
    calls = []

    def probe_failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_probe(*args, **kwargs)

    monkeypatch.setattr(recorder_module, "probe_examples", probe_failing_once)
    with pytest.raises(RuntimeError, match="simulated"):
        rec.snapshot(step=3)
    assert _observations(tmp_path)["id"].tolist() == [1, 2, 3]
    assert t3vis.open_run(tmp_path / "run").checkpoints == []   # no half-written checkpoint
    rec.observe([4], LOGITS[:1], [0], epoch=1)
    rec.snapshot(step=4)
    rec.close()
    run = t3vis.open_run(tmp_path / "run")
    assert run.dynamics_observations()["id"].tolist() == [1, 2, 3, 4]   # each once
    assert [c.step for c in run.checkpoints] == [4]


def test_a_failing_write_keeps_its_observations_for_the_next_flush(tmp_path, monkeypatch):
    rec = _recorder(tmp_path)
    rec.observe([1, 2, 3], LOGITS, [0, 0, 1])
    real_append = rec.writer.append_dynamics
    calls = []

    def append_failing_once(frame, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("No space left on device (simulated)")
        return real_append(frame, **kwargs)

    monkeypatch.setattr(rec.writer, "append_dynamics", append_failing_once)
    with pytest.raises(OSError, match="simulated"):
        rec.snapshot(step=3)
    assert _observations(tmp_path).empty
    rec.observe([1, 4], LOGITS[:2], [0, 1])
    rec.close()
    obs = _observations(tmp_path)
    # written once each; the implicit epoch count saw the first batch exactly once
    assert obs[["id", "epoch"]].values.tolist() == [[1, 0], [2, 0], [3, 0], [1, 1], [4, 0]]


def test_labels_on_an_accelerator_are_checked_at_the_flush(tmp_path, monkeypatch):
    # on an accelerator, reading the labels here would wait for the device: the check moves to the flush
    monkeypatch.setattr(classification_module, "checkable_now", lambda labels: False)
    rec = _recorder(tmp_path)
    rec.observe([1, 2, 3], LOGITS, [0, 0, 1], epoch=0, step=1)
    rec.observe([4, 5, 6], LOGITS, [0, 7, 1], epoch=0, step=2)     # 7: no such class
    rec.observe([7], LOGITS[:1], [1], epoch=0, step=3)
    with pytest.raises(InvalidInputError, match=r"outside the model's classes 0..1 at step\(s\) \[2\]"):
        rec.flush()
    assert _observations(tmp_path)["id"].tolist() == [1, 2, 3, 7]
    rec.close()                                                    # nothing owed any more
    assert _observations(tmp_path)["id"].tolist() == [1, 2, 3, 7]
