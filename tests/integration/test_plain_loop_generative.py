"""A plain PyTorch training loop (no Trainer) recording a generative model with t3vis.Recorder."""

import numpy as np
import pytest
import torch
from conftest import make_generative_model, make_pairs

import t3vis

TASK = {"gpt2": "causal-lm", "bart": "seq2seq"}


def _batch(kind, tokenizer, sources, targets):
    """One right-padded training batch with its token labels (-100 where no loss), as a script builds it."""
    if TASK[kind] == "seq2seq":
        inputs = tokenizer(sources, padding=True, return_tensors="pt")
        labels = tokenizer(text_target=targets, padding=True, return_tensors="pt")["input_ids"]
        labels[labels == tokenizer.pad_token_id] = -100
        return dict(inputs), labels
    rows, label_rows = [], []
    for source, target in zip(sources, targets):
        prompt = tokenizer(source)["input_ids"]
        ids = prompt + tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(ids)
        label_rows.append([-100] * len(prompt) + ids[len(prompt):])
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask, labels = torch.zeros_like(input_ids), torch.full_like(input_ids, -100)
    for i, (ids, row_labels) in enumerate(zip(rows, label_rows)):
        input_ids[i, :len(ids)], labels[i, :len(ids)] = torch.tensor(ids), torch.tensor(row_labels)
        mask[i, :len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}, labels


def _by_hand(kind, logits, labels):
    """Per row: the mean probability of its target tokens and the share the model ranks first."""
    logits, labels = logits.detach().numpy().astype(np.float64), labels.numpy()
    if TASK[kind] == "causal-lm":
        logits, labels = logits[:, :-1], labels[:, 1:]       # the logits at t predict token t + 1
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    means, accuracies = [], []
    for row_probs, row_labels in zip(probs, labels):
        positions = np.flatnonzero(row_labels != -100)
        gold = row_probs[positions, row_labels[positions]]
        means.append(gold.mean())
        accuracies.append((row_probs[positions].argmax(-1) == row_labels[positions]).mean())
    return np.array(means), np.array(accuracies)


@pytest.mark.parametrize("kind", ["gpt2", "bart"])
def test_a_plain_loop_records_checkpoints_and_the_dynamics_it_observes(tmp_path, kind):
    model, tokenizer = make_generative_model(kind)
    model = model.double()
    sources, targets = make_pairs(12, seed=1)
    # probe 4 training examples (ids 0..3) and 2 held-out ones (ids 100, 101)
    held_sources, held_targets = make_pairs(2, seed=2)
    rec = t3vis.Recorder(tmp_path / "run", model, tokenizer, sources[:4] + held_sources,
                         targets=targets[:4] + held_targets,
                         task=TASK[kind], ids=[0, 1, 2, 3, 100, 101], splits=["train"] * 4 + ["validation"] * 2,
                         batch_size=4)
    rec.add_examples(list(range(4, 12)), sources[4:], targets=targets[4:])
    rec.snapshot(step=0, epoch=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    step, kept = 0, {}
    for epoch in range(2):
        order = np.random.default_rng(epoch).permutation(12)
        for start in range(0, 12, 4):
            rows = order[start:start + 4]
            inputs, labels = _batch(kind, tokenizer, [sources[i] for i in rows], [targets[i] for i in rows])
            model.train()
            out = model(**inputs, labels=labels)
            step += 1
            rec.observe(rows, out.logits, labels, epoch=epoch, step=step)
            if step == 5:
                kept = {"rows": rows, "by_hand": _by_hand(kind, out.logits, labels)}
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        rec.snapshot(step=step, epoch=epoch + 1)
    rec.close()

    run = t3vis.open_run(tmp_path / "run")
    assert [c.step for c in run.checkpoints] == [0, 3, 6]
    assert not np.allclose(run.checkpoints[0].outputs["loss"], run.checkpoints[-1].outputs["loss"])
    obs = run.dynamics_observations()
    assert len(obs) == 24 and (obs.groupby(["id", "epoch"]).size() == 1).all()
    assert sorted(obs["epoch"].unique()) == [0, 1]
    at_five = obs[obs["step"] == 5].set_index("id").loc[kept["rows"]]
    means, accuracies = kept["by_hand"]
    np.testing.assert_allclose(at_five["gold_prob"], means, rtol=1e-5)
    np.testing.assert_allclose(at_five["correct"], accuracies, atol=1e-6)
    examples = run.examples.set_index("id")
    assert examples.loc[list(range(4, 12)), "target"].tolist() == targets[4:]
    assert (examples.loc[list(range(4, 12)), "probe_row"] < 0).all()
    dyn = run.dynamics()
    assert len(dyn) == 12 and (dyn["epochs"] == 2).all()
