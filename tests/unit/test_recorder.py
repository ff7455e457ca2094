"""Recorder: run creation, training dynamics from observe(), snapshots, and bad input."""

import json

import numpy as np
import pytest
import torch
from conftest import make_labels, make_model, make_texts

import t3vis
from t3vis.analysis.heads import importance_from_gate_gradients
from t3vis.errors import InvalidInputError


def test_snapshot_writes_a_complete_checkpoint(tiny_run):
    run_dir, texts, labels = tiny_run
    run = t3vis.open_run(run_dir)
    assert run.meta["num_layers"] == 2 and run.meta["num_heads"] == 4 and run.meta["hidden_size"] == 32
    assert run.meta["pooling"] == "cls" and run.label_names == ["LABEL_0", "LABEL_1"]
    assert [c.step for c in run.checkpoints] == [0, 5]
    ck = run.checkpoints[-1]
    out = ck.outputs
    assert list(out["id"]) == list(range(24))
    assert (out["pred"] == np.stack(out["probs"]).argmax(1)).all()
    assert np.allclose(out["gold_prob"], np.stack(out["probs"])[np.arange(24), labels])
    assert (out["correct"] == (out["pred"] == labels)).all()
    assert ck.hidden(0).shape == (24, 32) and ck.hidden(2).shape == (24, 32)
    assert ck.head_importance.shape == (2, 4)
    np.testing.assert_allclose(np.linalg.norm(ck.head_importance, axis=1), 1.0, rtol=1e-5)
    # the stored importance is what the (hand-checked) analysis function makes of the stored gradients
    raw = importance_from_gate_gradients(ck.example_gate_gradients(), normalize=False)
    np.testing.assert_allclose(raw, ck.head_importance_raw, rtol=2e-3)
    assert ck.metrics["probe_accuracy"] == pytest.approx(out["correct"].mean())
    assert ck.metrics["validation_accuracy"] == pytest.approx(out["correct"][12:].mean())
    # weights saved with the checkpoint load back and reproduce its outputs
    model, tokenizer = ck.load_model()
    with torch.no_grad():
        logits = model(**tokenizer([texts[3]], return_tensors="pt")).logits
    np.testing.assert_allclose(torch.softmax(logits, -1)[0].numpy(), out["probs"][3], rtol=1e-4)


def test_dynamics_come_from_observed_training_passes(tiny_run):
    run_dir, _, _labels = tiny_run
    run = t3vis.open_run(run_dir)
    obs = run.dynamics_observations()
    assert sorted(obs["id"].unique()) == list(range(12))
    assert sorted(obs["epoch"].unique()) == [0, 1]   # the k-th pass over an example is its epoch k
    dyn = run.dynamics().set_index("id")
    assert (dyn["epochs"] == 2).all()
    per_id = obs.groupby("id")["gold_prob"]
    np.testing.assert_allclose(dyn["confidence"], per_id.mean(), rtol=1e-6)
    np.testing.assert_allclose(dyn["variability"], per_id.std(ddof=0), atol=1e-7)
    assert set(dyn["region"]) <= {"easy-to-learn", "ambiguous", "hard-to-learn"}


def test_observe_with_explicit_epochs_and_unknown_rows():
    model, tokenizer = make_model("bert")
    rec = _recorder(model, tokenizer, path=None)
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    rec.observe(torch.tensor([7, 8, -1]), logits, torch.tensor([0, 0, 1]), epoch=3, step=40)
    obs = rec._drain_observations()
    assert list(obs["id"]) == [7, 8] and list(obs["epoch"]) == [3, 3] and list(obs["step"]) == [40, 40]
    p = torch.softmax(logits, -1)
    np.testing.assert_allclose(obs["gold_prob"], [p[0, 0], p[1, 0]], rtol=1e-6)
    assert list(obs["correct"]) == [True, False]


def test_recording_into_an_existing_run_needs_exist_ok(tiny_run):
    run_dir, texts, labels = tiny_run
    model, tokenizer = make_model("bert")
    with pytest.raises(InvalidInputError, match="already holds a run"):
        t3vis.Recorder(run_dir, model, tokenizer, texts, labels)
    with pytest.raises(InvalidInputError, match="different probe set"):
        t3vis.Recorder(run_dir, model, tokenizer, texts[:5], labels[:5], exist_ok=True)
    rec = t3vis.Recorder(run_dir, model, tokenizer, texts, labels, exist_ok=True)
    rec.snapshot(step=9)
    assert [c.step for c in t3vis.open_run(run_dir).checkpoints] == [0, 5, 9]


def test_add_examples_registers_unprobed_training_examples(tmp_path):
    model, tokenizer = make_model("bert")
    rec = _recorder(model, tokenizer, tmp_path / "run")
    rec.add_examples([100, 101], ["fun film", "dull plot"], [1, 0])
    rec.add_examples([100], ["fun film"], [1])  # known ids are not added twice
    ex = t3vis.open_run(tmp_path / "run").examples.set_index("id")
    assert ex.loc[100, "text"] == "fun film" and ex.loc[101, "probe_row"] == -1 and len(ex) == 8


def test_nan_outputs_are_flagged_in_the_run(tmp_path):
    model, tokenizer = make_model("bert")
    with torch.no_grad():
        model.classifier.bias[1] = float("nan")
    rec = _recorder(model, tokenizer, tmp_path / "run")
    summary = rec.snapshot(step=0)
    ck = t3vis.open_run(tmp_path / "run").checkpoints[0]
    assert ck.outputs["nan"].all() and (ck.outputs["pred"] == -1).all()
    assert summary.metrics["nan_examples"] == 6
    meta = json.loads((ck.path / "meta.json").read_text())
    assert meta["metrics"]["probe_loss"] is None  # NaN is written as null, keeping meta.json valid JSON


@pytest.mark.parametrize("kwargs, message", [
    (dict(ids=[1, 1, 2, 3, 4, 5]), "unique integer"),
    (dict(splits=["train"]), "1 splits for 6 texts"),
    (dict(label_names=["a", "b", "c"]), "3 label names"),
    (dict(pooling="max"), "unknown pooling"),
])
def test_bad_recorder_options_are_refused(tmp_path, kwargs, message):
    model, tokenizer = make_model("bert")
    with pytest.raises(InvalidInputError, match=message):
        _recorder(model, tokenizer, tmp_path / "run", **kwargs)
    assert not (tmp_path / "run" / "run.json").exists()


def _recorder(model, tokenizer, path, **kwargs):
    import tempfile
    from pathlib import Path

    path = path or Path(tempfile.mkdtemp()) / "run"
    return t3vis.Recorder(path, model, tokenizer, make_texts(6), make_labels(6), batch_size=4, **kwargs)


def test_implicit_epochs_count_passes_per_example_across_flushes(tmp_path):
    model, tokenizer = make_model("bert")
    rec = _recorder(model, tokenizer, tmp_path / "run")
    logits = torch.zeros(3, 2)
    rec.observe([1, 2, 1], logits, [0, 1, 0])
    rec.flush()
    rec.observe([1, 5], logits[:2], [0, 1])
    rec.close()
    obs = t3vis.open_run(tmp_path / "run").dynamics_observations()
    assert obs[["id", "epoch"]].values.tolist() == [[1, 0], [2, 0], [1, 1], [1, 2], [5, 0]]


def test_label_names_follow_the_same_rules_as_t3vis_record(tmp_path):
    """Names match the model's own labels ignoring case; on a placeholder model they need label_names
    (the error shows the mapping needed); the mapping used is kept in run.json."""
    model, tokenizer = make_model("bert", num_labels=3, seed=2)
    texts = make_texts(6, seed=4)
    names = ["Sport", "politics", "TECHNOLOGY", "sport", "Politics", "technology"]   # as a user's data file has them
    with pytest.raises(InvalidInputError, match=r"label-map|label_names") as refused:
        t3vis.Recorder(tmp_path / "placeholder", model, tokenizer, texts, names)
    assert "politics" in str(refused.value).lower() and "sport" in str(refused.value).lower()
    assert not (tmp_path / "placeholder").exists()                   # refused before anything is written

    t3vis.Recorder(tmp_path / "explicit", model, tokenizer, texts, names,
                   label_names=["sport", "politics", "technology"]).close()
    run = t3vis.open_run(tmp_path / "explicit")
    assert list(run.examples["label"]) == [0, 1, 2, 0, 1, 2]           # what the user meant, not alphabetical
    assert run.meta["label_map"] == {"sport": 0, "politics": 1, "technology": 2}

    model.config.id2label = {0: "sport", 1: "politics", 2: "technology"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    rec = t3vis.Recorder(tmp_path / "named", model, tokenizer, texts, names)
    rec.add_examples([100, 101], ["a movie", "the plot"], ["TECHNOLOGY", "Sport"])
    rec.close()
    examples = t3vis.open_run(tmp_path / "named").examples.set_index("id")
    assert list(examples.loc[range(6), "label"]) == [0, 1, 2, 0, 1, 2]
    assert list(examples.loc[[100, 101], "label"]) == [2, 0]


def test_a_snapshot_streams_to_its_files_exactly_what_an_in_memory_probe_measures(tmp_path):
    """The snapshot writes its per-example arrays a batch at a time (scattered rows, length-sorted
    batches) through spool files; what lands is what probe() keeps in memory, and nothing else."""
    from t3vis.record.probe import probe

    model, tokenizer = make_model("bert")
    texts, labels = make_texts(23), make_labels(23)
    rec = t3vis.Recorder(tmp_path / "run", model, tokenizer, texts, labels, batch_size=5, save_weights=False)
    rec.snapshot(step=1)
    expected = probe(model, tokenizer, texts, labels, batch_size=5, layout=rec.layout)
    ck = t3vis.open_run(tmp_path / "run").checkpoint(1)
    assert sorted(p.name for p in ck.path.iterdir()) == ["gate_grads.npy", "heads.npz", "hidden.npy", "meta.json",
                                                          "outputs.parquet"]     # no spool or scratch file left
    np.testing.assert_array_equal(np.asarray(ck.hidden_states), expected.hidden)
    np.testing.assert_array_equal(ck.example_gate_gradients(), expected.gate_grads)
    np.testing.assert_allclose(ck.head_importance_raw, np.abs(expected.gate_grads.astype(np.float64)).sum(0),
                               rtol=1e-6)
    np.testing.assert_allclose(np.stack(ck.outputs["probs"]), expected.probs, rtol=1e-6)
