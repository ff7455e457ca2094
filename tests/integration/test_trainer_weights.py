"""T3VisCallback references the checkpoints the Trainer saves instead of copying their weights."""

import json

import torch
from conftest import make_labels, make_model, make_texts
from fastapi.testclient import TestClient
from test_trainer_callback import _dataset
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

import t3vis
from t3vis.integrations.transformers import T3VisCallback
from t3vis.server import create_app


def _train(tmp_path, eval_steps=2, **limits):
    """16 rows, batch 4, 1 epoch: steps 1..4, saved every 2 steps and evaluated every eval_steps."""
    model, tokenizer = make_model("bert")
    texts, labels = make_texts(16, seed=3), make_labels(16, seed=3)
    callback = T3VisCallback(tmp_path / "run", tokenizer, texts[:4], labels[:4], record_dynamics=False,
                             batch_size=4)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=4,
                             eval_strategy="steps", eval_steps=eval_steps, save_strategy="steps", save_steps=2,
                             report_to=[], use_cpu=True, logging_strategy="no", disable_tqdm=True,
                             learning_rate=1e-3, **limits)
    Trainer(model=model, args=args, train_dataset=_dataset(tokenizer, texts, labels),
            eval_dataset=_dataset(tokenizer, texts[:4], labels[:4]),
            data_collator=DataCollatorWithPadding(tokenizer), callbacks=[callback]).train()
    return model


def _meta(ck) -> dict:
    return json.loads((ck.path / "meta.json").read_text())


def test_snapshots_at_trainer_saves_reference_the_trainer_folder_and_copy_nothing(tmp_path):
    model = _train(tmp_path)
    run = t3vis.open_run(tmp_path / "run")
    assert [c.step for c in run.checkpoints] == [0, 2, 4]
    out = (tmp_path / "out").resolve()
    assert _meta(run.checkpoints[1])["weights"] == str(out / "checkpoint-2")
    assert _meta(run.checkpoints[2])["weights"] == str(out / "checkpoint-4")
    # step 0 came before any Trainer save: copied, then dropped by the default keep_weights="last:2"
    assert _meta(run.checkpoints[0])["weights"] is None
    assert list((tmp_path / "run").rglob("weights")) == []
    assert sorted(run.meta["weights_roots"]) == [str(out / "checkpoint-2"), str(out / "checkpoint-4")]
    for ck in run.checkpoints[1:]:
        reloaded, _ = ck.load_model(confined=True)
        assert reloaded is not None
    last, _ = run.checkpoints[2].load_model(confined=True)
    assert torch.equal(last.classifier.weight, model.classifier.weight)


def test_a_trainer_folder_deleted_by_save_total_limit_reports_no_weights(tmp_path):
    _train(tmp_path, save_total_limit=1)
    assert not (tmp_path / "out" / "checkpoint-2").exists()     # the Trainer rotated it away
    run = t3vis.open_run(tmp_path / "run")
    assert [c.has_weights(confined=True) for c in run.checkpoints] == [False, False, True]
    with TestClient(create_app([tmp_path / "run"])) as client:
        info = client.get("/api/runs/run")
        assert info.status_code == 200, info.text
        assert [c["has_weights"] for c in info.json()["checkpoints"]] == [False, False, True]
        missing = client.post("/api/runs/run/checkpoints/2/instance", json={"id": 1, "method": "gradient"})
        assert missing.status_code == 404, missing.text
        assert "no saved weights" in missing.json()["detail"]


def test_snapshots_between_trainer_saves_are_copied_under_the_policy(tmp_path):
    _train(tmp_path, eval_steps=1)      # snapshots at 0..4; the Trainer saves at 2 and 4 only
    run = t3vis.open_run(tmp_path / "run")
    assert [c.step for c in run.checkpoints] == [0, 1, 2, 3, 4]
    out = (tmp_path / "out").resolve()
    # copies at 0, 1, 3; the default "last:2" (steps 3 and 4) drops the copies at 0 and 1
    assert [_meta(c)["weights"] for c in run.checkpoints] == [
        None, None, str(out / "checkpoint-2"), "weights", str(out / "checkpoint-4")]
    assert [p.parent.name for p in (tmp_path / "run").rglob("weights")] == ["step-00000003"]
    assert [c.has_weights(confined=True) for c in run.checkpoints] == [False, False, True, True, True]
