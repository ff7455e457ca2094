"""T3VisCallback on generative models: a Trainer fine-tuning causal and encoder-decoder language
models, a LoRA-wrapped one, and TRL's SFTTrainer, each on a tiny random model."""

import copy

import numpy as np
import pytest
import torch
from conftest import make_generative_model, make_pairs
from test_trainer_callback import ListDataset
from torch import nn
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

import t3vis
from t3vis.integrations.transformers import T3VisCallback

TASK = {"gpt2": "causal-lm", "llama": "causal-lm", "t5": "seq2seq", "bart": "seq2seq"}


def _rows(kind, tokenizer, sources, targets):
    """Tokenised training rows as a fine-tuning script writes them. causal-lm: the prompt with the
    tokenizer's special tokens, the completion and the end-of-sequence token, the loss on the
    completion only; seq2seq: the source, and the target as labels."""
    rows = []
    for source, target in zip(sources, targets):
        if TASK[kind] == "seq2seq":
            rows.append({**tokenizer(source), "labels": tokenizer(text_target=target)["input_ids"]})
            continue
        prompt = tokenizer(source)["input_ids"]
        ids = prompt + tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                     "labels": [-100] * len(prompt) + ids[len(prompt):]})
    return ListDataset(rows)


def _without_dropout(model):
    """Training-mode passes that repeat exactly, so the recorded dynamics can be recomputed."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
    return model


def _reference_scores(kind, model, row):
    """(mean target-token probability, token accuracy) of one row, by hand from the model's logits."""
    ids, labels = torch.tensor([row["input_ids"]]), torch.tensor(row["labels"])
    with torch.no_grad():
        if TASK[kind] == "seq2seq":
            logits = model(input_ids=ids, labels=labels[None]).logits[0]
        else:
            logits, labels = model(input_ids=ids).logits[0, :-1], labels[1:]   # logits at t predict token t + 1
    scored = labels != -100
    probs = logits[scored].double().softmax(-1)
    gold = labels[scored]
    return float(probs[torch.arange(len(gold)), gold].mean()), float((probs.argmax(-1) == gold).double().mean())


def _arguments(tmp_path, **overrides):
    options = dict(output_dir=str(tmp_path / "out"), num_train_epochs=2, per_device_train_batch_size=4,
                   eval_strategy="epoch", save_strategy="no", report_to=[], use_cpu=True, logging_strategy="no",
                   disable_tqdm=True, learning_rate=1e-2, seed=3)
    return TrainingArguments(**{**options, **overrides})


@pytest.mark.parametrize("kind", ["gpt2", "t5", "bart"])
def test_a_trainer_fine_tuning_a_language_model_is_recorded_with_its_dynamics(tmp_path, kind):
    model, tokenizer = make_generative_model(kind)
    model = _without_dropout(model)
    initial = copy.deepcopy(model)
    sources, targets = make_pairs(12, seed=1)
    held_sources, held_targets = make_pairs(3, seed=2)
    train = _rows(kind, tokenizer, sources, targets)
    # the probe set: 3 held-out examples and the first 3 training examples
    callback = T3VisCallback(tmp_path / "run", tokenizer, held_sources + sources[:3], held_targets + targets[:3],
                             task=TASK[kind], splits=["validation"] * 3 + ["train"] * 3, batch_size=4)
    trainer = Trainer(model=model, args=_arguments(tmp_path), train_dataset=train,
                      eval_dataset=_rows(kind, tokenizer, held_sources, held_targets),
                      data_collator=DataCollatorForSeq2Seq(tokenizer, model=model), callbacks=[callback])
    trainer.train()

    run = t3vis.open_run(tmp_path / "run")
    assert run.task_format.name == TASK[kind]
    assert [c.step for c in run.checkpoints] == [0, 3, 6]
    assert "eval_loss" in run.checkpoints[-1].metrics
    first, last = run.checkpoints[0].outputs, run.checkpoints[-1].outputs
    assert not np.allclose(first["loss"], last["loss"])        # the last probe saw the trained weights

    obs = run.dynamics_observations()
    assert len(obs) == 12 * 2
    assert (obs.groupby(["id", "epoch"]).size() == 1).all()    # every training row once in every epoch
    assert obs["gold_prob"].gt(0).all() and obs["gold_prob"].le(1).all()
    assert obs["correct"].between(0, 1).all()
    # training rows encoded as the task encodes the probed ones carry the probe ids 3, 4, 5
    assert {3, 4, 5} <= set(obs["id"]) and not {0, 1, 2} & set(obs["id"])
    # the first step ran on the initial weights: its observations are the initial model's scores
    first_step = obs[obs["step"] == 1]
    assert len(first_step) == 4
    row_of = {3: 0, 4: 1, 5: 2, **{6 + row: row for row in range(3, 12)}}   # others: max probe id + 1 + row
    for example_id, gold_prob, correct in first_step[["id", "gold_prob", "correct"]].itertuples(index=False):
        expected_prob, expected_correct = _reference_scores(kind, initial, train[row_of[example_id]])
        assert gold_prob == pytest.approx(expected_prob, rel=1e-4)
        assert correct == pytest.approx(expected_correct, abs=1e-6)

    examples = run.examples.set_index("id")
    fresh = examples[examples["probe_row"] < 0]
    assert sorted(fresh.index) == list(range(9, 18)) and (fresh["split"] == "train").all()
    # registered rows decode back to the training texts and targets
    assert [(fresh.loc[6 + i, "text"], fresh.loc[6 + i, "target"]) for i in range(3, 12)] == \
        list(zip(sources[3:], targets[3:]))
    assert all(getattr(h, "__func__", None) is not T3VisCallback._observe for h in model._forward_hooks.values())


def test_a_lora_model_under_the_trainer_keeps_adapters_only_and_its_checkpoints_load_back(tmp_path):
    model, tokenizer = make_generative_model("llama", lora=True)
    tokenizer.pad_token = tokenizer.eos_token          # the collator pads; Llama's tokenizer has no pad token
    sources, targets = make_pairs(12, seed=1)
    callback = T3VisCallback(tmp_path / "run", tokenizer, sources[:4], targets[:4], task="causal-lm", batch_size=4,
                             keep_weights="all")
    # the Trainer saves checkpoint-3 and checkpoint-6 too; an adapter is small, so the run keeps its own
    args = _arguments(tmp_path, save_strategy="epoch", learning_rate=5e-2)
    trainer = Trainer(model=model, args=args, train_dataset=_rows("llama", tokenizer, sources, targets),
                      eval_dataset=_rows("llama", tokenizer, sources[:4], targets[:4]), processing_class=tokenizer,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, model=model), callbacks=[callback])
    trainer.train()

    run = t3vis.open_run(tmp_path / "run")
    assert [c.step for c in run.checkpoints] == [0, 3, 6]
    assert (tmp_path / "out" / "checkpoint-6" / "adapter_model.safetensors").is_file()
    for ck in run.checkpoints:
        assert ck.weights_path == ck.path / "weights"
        files = {p.name for p in ck.weights_path.iterdir()}
        assert "adapter_model.safetensors" in files and "model.safetensors" not in files, files
    assert (tmp_path / "run" / "base_model" / "model.safetensors").is_file()     # the base, once
    assert not np.allclose(run.checkpoints[0].outputs["loss"], run.checkpoints[-1].outputs["loss"])
    obs = run.dynamics_observations()
    assert len(obs) == 12 * 2 and (obs.groupby(["id", "epoch"]).size() == 1).all()
    assert set(obs["id"]) >= {0, 1, 2, 3}                       # the probed training rows keep their ids

    ids = torch.tensor([tokenizer(sources[5])["input_ids"]])
    model.eval()
    with torch.no_grad():
        trained = model(input_ids=ids).logits
        last, _ = run.checkpoints[-1].load_model()
        np.testing.assert_allclose(last(input_ids=ids).logits.numpy(), trained.numpy(), atol=1e-5)
        start, _ = run.checkpoints[0].load_model()
        assert not torch.allclose(start(input_ids=ids).logits, trained, atol=1e-4)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_trl_sft_trainer_on_prompt_completion_rows_is_recorded_with_its_dynamics(tmp_path, kind):
    import datasets
    import trl

    model, tokenizer = make_generative_model(kind)
    model = _without_dropout(model)
    initial = copy.deepcopy(model)     # SFTTrainer patches the model's forward with its fused LM head
    sources, targets = make_pairs(12, seed=1)
    held_sources, held_targets = make_pairs(3, seed=2)
    train = datasets.Dataset.from_list([{"prompt": s, "completion": " " + t} for s, t in zip(sources, targets)])
    callback = T3VisCallback(tmp_path / "run", tokenizer, held_sources + sources[:3], held_targets + targets[:3],
                             task="causal-lm", splits=["validation"] * 3 + ["train"] * 3, batch_size=4,
                             snapshot_on="epoch")
    args = trl.SFTConfig(output_dir=str(tmp_path / "out"), num_train_epochs=2, per_device_train_batch_size=4,
                         eval_strategy="no", save_strategy="no", report_to=[], use_cpu=True, logging_strategy="no",
                         disable_tqdm=True, learning_rate=1e-2, seed=3,
                         # SFTConfig's default bf16=True would round the scores checked by hand below
                         bf16=False)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                             callbacks=[callback])
    trainer.train()

    run = t3vis.open_run(tmp_path / "run")
    assert [c.step for c in run.checkpoints] == [0, 3, 6]
    assert not np.allclose(run.checkpoints[0].outputs["loss"], run.checkpoints[-1].outputs["loss"])
    obs = run.dynamics_observations()
    assert len(obs) == 12 * 2 and (obs.groupby(["id", "epoch"]).size() == 1).all()
    assert obs["gold_prob"].gt(0).all() and obs["gold_prob"].le(1).all() and obs["correct"].between(0, 1).all()
    # TRL encodes a prompt and completion as the task does: the probed training rows keep the probe ids
    assert {3, 4, 5} <= set(obs["id"]) and not {0, 1, 2} & set(obs["id"])
    examples = run.examples.set_index("id")
    row_of = {example_id: sources.index(text) for example_id, text in examples["text"].items() if text in sources}
    fresh = examples[examples["probe_row"] < 0]
    assert len(fresh) == 9 and [fresh.loc[i, "target"] for i in fresh.index] == \
        [targets[row_of[i]] for i in fresh.index]
    # the first step's scores, read off TRL's fused head, are the initial model's, computed by hand
    reference = _rows(kind, tokenizer, sources, targets)
    first_step = obs[obs["step"] == 1]
    assert len(first_step) == 4
    for example_id, gold_prob, correct in first_step[["id", "gold_prob", "correct"]].itertuples(index=False):
        expected_prob, expected_correct = _reference_scores(kind, initial, reference[row_of[example_id]])
        assert gold_prob == pytest.approx(expected_prob, rel=1e-4)
        assert correct == pytest.approx(expected_correct, abs=1e-6)


def test_seq2seq_rows_with_one_source_and_two_targets_are_told_apart_by_their_targets(tmp_path):
    model, tokenizer = make_generative_model("t5")
    model = _without_dropout(model)
    initial = copy.deepcopy(model)
    sources, targets = make_pairs(6, seed=1)
    sources[1], targets[1] = sources[0], "the film was fun"          # row 1: row 0's source, another target
    train = _rows("t5", tokenizer, sources, targets)
    # the probe is row 1: row 0, listed first with the same tokens in, must not take its id
    callback = T3VisCallback(tmp_path / "run", tokenizer, [sources[1]], [targets[1]], task="seq2seq")
    args = _arguments(tmp_path, num_train_epochs=1, per_device_train_batch_size=6, eval_strategy="no")
    Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
            callbacks=[callback]).train()

    run = t3vis.open_run(tmp_path / "run")
    examples = run.examples.set_index("id")
    assert examples.loc[0, "target"] == targets[1] and examples.loc[1, "target"] == targets[0]   # id 1: row 0
    obs = run.dynamics_observations().set_index("id")
    assert sorted(obs.index) == [0, 1, 3, 4, 5, 6]                      # fresh ids: 1 + row
    for example_id, row in {0: 1, 1: 0}.items():                        # each scored on its own target
        expected_prob, expected_correct = _reference_scores("t5", initial, train[row])
        assert obs.loc[example_id, "gold_prob"] == pytest.approx(expected_prob, rel=1e-4)
        assert obs.loc[example_id, "correct"] == pytest.approx(expected_correct, abs=1e-6)
