"""T3VisCallback inside a real Hugging Face Trainer run on a tiny random model."""

import numpy as np
import pytest
import torch
from conftest import make_labels, make_model, make_texts
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

import t3vis
from t3vis.integrations.transformers import T3VisCallback


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def _dataset(tokenizer, texts, labels):
    return ListDataset([{**tokenizer(t), "labels": y} for t, y in zip(texts, labels)])


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_trainer_run_is_recorded_with_dynamics_linked_to_the_probe(tmp_path, kind):
    model, tokenizer = make_model(kind)
    train_texts, train_labels = make_texts(16, seed=1), make_labels(16, seed=1)
    held_texts, held_labels = make_texts(6, seed=2), make_labels(6, seed=2)
    # the probe set: 6 held-out examples and the first 4 training examples
    probe_texts = held_texts + train_texts[:4]
    probe_labels = held_labels + train_labels[:4]
    callback = T3VisCallback(tmp_path / "run", tokenizer, probe_texts, probe_labels,
                             splits=["validation"] * 6 + ["train"] * 4, batch_size=4)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), num_train_epochs=2, per_device_train_batch_size=4,
                             eval_strategy="epoch", save_strategy="no", report_to=[], use_cpu=True,
                             logging_strategy="no", disable_tqdm=True, learning_rate=1e-3)
    trainer = Trainer(model=model, args=args, train_dataset=_dataset(tokenizer, train_texts, train_labels),
                      eval_dataset=_dataset(tokenizer, held_texts, held_labels),
                      data_collator=DataCollatorWithPadding(tokenizer), callbacks=[callback])
    trainer.train()

    run = t3vis.open_run(tmp_path / "run")
    assert [c.step for c in run.checkpoints] == [0, 4, 8]
    assert run.checkpoints[1].epoch == pytest.approx(1.0)
    assert "eval_loss" in run.checkpoints[-1].metrics
    # the last snapshot saw the trained weights: its outputs differ from step 0's
    assert not np.allclose(run.checkpoints[0].outputs["loss"], run.checkpoints[-1].outputs["loss"])

    dyn = run.dynamics()
    assert len(dyn) == 16 and (dyn["epochs"] == 2).all()
    # training examples that are also probed keep their probe ids (6..9); the rest get new ids
    assert set(range(6, 10)) <= set(dyn["id"])
    examples = run.examples.set_index("id")
    assert len(examples) == 6 + 16
    fresh = examples[examples["probe_row"] < 0]
    assert (fresh["split"] == "train").all() and len(fresh) == 12
    # decoded texts of the unprobed training examples are the training sentences themselves
    assert set(fresh["text"]) <= set(train_texts)
    # the observed gold probabilities come from training-mode passes, so they lie in (0, 1)
    obs = run.dynamics_observations()
    assert obs["gold_prob"].between(0, 1).all()
    # the observing hook came off at the end of training
    assert all(getattr(h, "__func__", None) is not T3VisCallback._observe for h in model._forward_hooks.values())


def test_checkpoints_the_trainer_saves_are_referenced_not_copied(tmp_path):
    model, tokenizer = make_model("bert")
    texts, labels = make_texts(8, seed=3), make_labels(8, seed=3)
    callback = T3VisCallback(tmp_path / "run", tokenizer, texts[:4], labels[:4], snapshot_on="epoch",
                             record_dynamics=False, batch_size=4)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=4,
                             eval_strategy="no", save_strategy="epoch", report_to=[], use_cpu=True,
                             logging_strategy="no", disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=_dataset(tokenizer, texts, labels),
            data_collator=DataCollatorWithPadding(tokenizer), callbacks=[callback]).train()
    run = t3vis.open_run(tmp_path / "run")
    first, last = run.checkpoints
    assert first.weights_path == first.path / "weights"            # step 0: nothing saved by the Trainer yet
    assert last.weights_path == (tmp_path / "out" / "checkpoint-2").resolve()
    assert not (last.path / "weights").exists()
    reloaded, _ = last.load_model()
    assert torch.equal(reloaded.classifier.weight, model.classifier.weight)
    assert run.dynamics().empty
