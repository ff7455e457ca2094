"""Training dynamics from a Trainer run: epochs from the Trainer's state, a resumed run, duplicate texts."""

import numpy as np
import pandas as pd
from conftest import make_labels, make_model, make_texts
from test_trainer_callback import _dataset
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

import t3vis
from t3vis.integrations.transformers import T3VisCallback


def _train(tmp_path, texts, labels, probe_texts, probe_labels, *, epochs, resume=False, **arguments):
    model, tokenizer = make_model("bert")
    callback = T3VisCallback(tmp_path / "run", tokenizer, probe_texts, probe_labels, batch_size=4,
                             save_weights=False)
    options = dict(output_dir=str(tmp_path / "out"), num_train_epochs=epochs, per_device_train_batch_size=4,
                   eval_strategy="no", save_strategy="epoch", report_to=[], use_cpu=True, logging_strategy="no",
                   disable_tqdm=True, learning_rate=1e-3, lr_scheduler_type="constant", seed=7)
    args = TrainingArguments(**{**options, **arguments})
    trainer = Trainer(model=model, args=args, train_dataset=_dataset(tokenizer, texts, labels),
                      data_collator=DataCollatorWithPadding(tokenizer), callbacks=[callback])
    trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-4") if resume else None)
    return t3vis.open_run(tmp_path / "run")


def test_each_observation_counts_in_the_epoch_of_its_step(tmp_path):
    texts, labels = make_texts(16, seed=1), make_labels(16, seed=1)
    # 16 rows in batches of 4 with 2 accumulation steps: 2 optimizer steps per epoch, 3 epochs;
    # the Trainer's state.epoch runs 0, 0.25, 0.5, 0.75 (forward passes of epoch 0), then 1.0 ...
    run = _train(tmp_path, texts, labels, texts[:4], labels[:4], epochs=3, gradient_accumulation_steps=2,
                 save_strategy="no")
    obs = run.dynamics_observations()
    assert len(obs) == 16 * 3
    by_step = obs.groupby("step")["epoch"].agg(["min", "max", "size"])
    assert by_step.index.tolist() == [1, 2, 3, 4, 5, 6]
    assert by_step["min"].tolist() == by_step["max"].tolist() == [0, 0, 1, 1, 2, 2]
    assert by_step["size"].tolist() == [8] * 6                   # two micro-batches of 4 per step
    per_epoch = obs.groupby(["id", "epoch"]).size()
    assert (per_epoch == 1).all() and len(per_epoch) == 16 * 3   # every example once in every epoch
    dyn = run.dynamics()
    assert len(dyn) == 16 and (dyn["epochs"] == 3).all()


def test_a_resumed_run_gives_the_data_map_of_an_uninterrupted_one(tmp_path):
    texts, labels = make_texts(16, seed=1), make_labels(16, seed=1)
    probe_texts, probe_labels = make_texts(4, seed=2) + texts[:2], make_labels(4, seed=2) + labels[:2]
    straight = _train(tmp_path / "straight", texts, labels, probe_texts, probe_labels, epochs=2)
    _train(tmp_path / "resumed", texts, labels, probe_texts, probe_labels, epochs=1)
    assert set(t3vis.open_run(tmp_path / "resumed" / "run").dynamics()["epochs"]) == {1}
    resumed = _train(tmp_path / "resumed", texts, labels, probe_texts, probe_labels, epochs=2, resume=True)

    expected, got = straight.dynamics().set_index("id"), resumed.dynamics().set_index("id")
    assert len(expected) == 16 and (expected["epochs"] == 2).all()
    assert got.index.tolist() == expected.index.tolist()
    assert got["epochs"].tolist() == expected["epochs"].tolist()
    np.testing.assert_allclose(got["confidence"], expected["confidence"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["variability"], expected["variability"], rtol=1e-3, atol=1e-6)
    obs = resumed.dynamics_observations()
    assert sorted(obs["step"].unique()) == list(range(1, 9))    # steps continue after the resume
    assert len(resumed.examples) == len(straight.examples)       # training examples registered once
    assert [c.step for c in resumed.checkpoints] == [0]          # step 0 only: snapshots come at evaluations


def test_identical_training_texts_keep_their_own_ids(tmp_path):
    texts, labels = make_texts(12, seed=1), make_labels(12, seed=1)
    same = "the movie was really great"
    texts = [same, *texts[:5], same, *texts[5:], same]             # rows 0, 6 and 13
    labels = [1, *labels[:5], 1, *labels[5:], 0]                    # row 13: same text, another label
    probe_texts, probe_labels = [*make_texts(3, seed=2), same], [*make_labels(3, seed=2), 1]
    run = _train(tmp_path, texts, labels, probe_texts, probe_labels, epochs=3, save_strategy="no")
    obs = run.dynamics_observations()
    counts = obs.groupby(["id", "epoch"]).size()
    assert (counts == 1).all(), counts[counts != 1]                # no id observed twice in an epoch
    dyn = run.dynamics()
    assert len(dyn) == len(texts) and (dyn["epochs"] == 3).all()
    examples = run.examples.set_index("id")
    copies = examples.loc[dyn["id"]][lambda e: e["text"] == same]
    assert len(copies) == 3
    assert 3 in copies.index                                        # the first copy is the probed example
    assert sorted(copies["label"]) == [0, 1, 1]
    assert pd.Series(copies.index).is_unique


def test_a_training_row_is_linked_to_the_probe_only_with_the_same_label(tmp_path):
    texts, labels = make_texts(8, seed=1), make_labels(8, seed=1)
    probe_texts, probe_labels = texts[:2], [1 - labels[0], labels[1]]   # text 0 probed with the other label
    run = _train(tmp_path, texts, labels, probe_texts, probe_labels, epochs=1, save_strategy="no")
    ids = set(run.dynamics()["id"])
    assert 1 in ids and 0 not in ids and len(ids) == 8
