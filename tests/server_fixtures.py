"""Runs for the server tests, recorded once per test session (the conftest tiny_run is per test).

`record_pruning_run(path, n)`: one checkpoint (step 0) of a random BERT over n probe examples,
enough for pruning's sampled estimate to differ from its exact figures.

`record_tiny_run(path)`: the conftest tiny_run recipe (2-layer, 4-head random BERT, 24 probe
examples, checkpoints at steps 0 and 5, training dynamics, weights saved), with one step of
real training between the checkpoints so the two differ, plus 6 training-only examples
(probe_row -1) so the table and the data map hold unprobed rows too.
"""

from __future__ import annotations

from pathlib import Path

from conftest import make_labels, make_model, make_texts

N_PROBE = 24
N_TRAIN_ONLY = 6


def record_pruning_run(path: Path, n: int) -> tuple[list[str], list[int]]:
    """The run's probe texts and labels."""
    from t3vis import Recorder

    model, tokenizer = make_model("bert", seed=3)
    texts, labels = make_texts(n, seed=5), make_labels(n, seed=5)
    rec = Recorder(path, model, tokenizer, texts, labels, batch_size=64)
    rec.snapshot(step=0, epoch=0.0)
    rec.close()
    return texts, labels


def record_tiny_run(path: Path) -> tuple[Path, list[str], list[int]]:
    import torch

    from t3vis import Recorder

    model, tokenizer = make_model("bert")
    texts, labels = make_texts(N_PROBE), make_labels(N_PROBE)
    rec = Recorder(path, model, tokenizer, texts, labels, splits=["train"] * 12 + ["validation"] * 12,
                   batch_size=8, progress=False)
    extra_texts = make_texts(N_TRAIN_ONLY, seed=7)
    extra_labels = make_labels(N_TRAIN_ONLY, seed=7)
    extra_ids = list(range(1000, 1000 + N_TRAIN_ONLY))
    rec.add_examples(extra_ids, extra_texts, extra_labels)
    rec.snapshot(step=0, epoch=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    train_texts, train_labels = texts[:12] + extra_texts, labels[:12] + extra_labels
    train_ids = list(range(12)) + extra_ids
    for _ in range(2):
        enc = tokenizer(train_texts, padding=True, return_tensors="pt")
        logits = model(**enc).logits
        rec.observe(torch.tensor(train_ids), logits, torch.tensor(train_labels))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(train_labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    rec.snapshot(step=5, epoch=2.0)
    rec.close()
    return path, texts, labels
