"""`t3vis demo`: fine-tune all-MiniLM-L6-v2 on Rotten Tomatoes sentences and record it.

A plain PyTorch loop with `t3vis.Recorder`, the same few lines a user adds to their own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("runs/demo")
    train_size: int = 4000          # training sentences
    heldout_size: int = 1000        # held-out probe sentences
    probe_train_size: int = 1000    # training sentences also probed (links the data map to the projection)
    epochs: int = 2
    snapshots_per_epoch: int = 2
    batch_size: int = 32
    learning_rate: float = 5e-5
    max_length: int = 64
    seed: int = 0


def stratified_split(labels: np.ndarray, sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Disjoint index sets of the given sizes, each with the label mix of the whole."""
    rng = np.random.default_rng(seed)
    total = sum(sizes)
    if total > len(labels):
        raise ValueError(f"asked for {total} sentences, the demo data has {len(labels)}")
    classes, counts = np.unique(labels, return_counts=True)
    pools = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    taken = {c: 0 for c in classes}
    parts = []
    for size in sizes:
        quota = np.floor(counts / counts.sum() * size).astype(int)
        quota[: size - quota.sum()] += 1  # hand out the remainder
        part = []
        for c, q in zip(classes, quota):
            part.append(pools[c][taken[c]:taken[c] + q])
            taken[c] += q
        parts.append(rng.permutation(np.concatenate(part)))
    return parts


def run_demo(config: DemoConfig = DemoConfig(), log=print) -> Path:
    import torch
    from tqdm.auto import tqdm

    from t3vis.defaults import DEMO_LABELS, load_demo_data, load_demo_model
    from t3vis.record.recorder import Recorder

    torch.manual_seed(config.seed)
    data = load_demo_data()
    labels = data["label"].to_numpy()
    train, heldout = stratified_split(labels, (config.train_size, config.heldout_size), config.seed)
    probe_train = train[: config.probe_train_size]
    probe_rows = np.concatenate([heldout, probe_train])
    log(f"demo: {len(train)} training and {len(heldout)} held-out sentences of Rotten Tomatoes; "
        f"probing {len(heldout)} held-out + {len(probe_train)} training sentences")

    model, tokenizer = load_demo_model(DEMO_LABELS)
    recorder = Recorder(config.out, model, tokenizer, data["text"].iloc[probe_rows].tolist(), labels[probe_rows],
                        ids=probe_rows, splits=["validation"] * len(heldout) + ["train"] * len(probe_train),
                        label_names=DEMO_LABELS, max_length=config.max_length, progress=True,
                        keep_weights="all")  # the viewer's instance view computes at every checkpoint shown
    rest = train[config.probe_train_size:]
    recorder.add_examples(rest, data["text"].iloc[rest].tolist(), labels[rest], split="train")

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    # every 1/snapshots_per_epoch of an epoch, the last step included
    due = {round(k * steps_per_epoch / config.snapshots_per_epoch)
           for k in range(1, config.epochs * config.snapshots_per_epoch + 1)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / total_steps))

    def snapshot(step: int) -> None:
        summary = recorder.snapshot(step=step, epoch=step / steps_per_epoch)
        m = summary.metrics
        log(f"  checkpoint step {step:4d} (epoch {step / steps_per_epoch:.2f}): held-out accuracy "
            f"{m['validation_accuracy']:.3f}, loss {m['validation_loss']:.3f}; training-probe accuracy "
            f"{m['train_accuracy']:.3f}; weights kept {summary.run_weights_bytes / 1e6:.0f} MB")

    started = time.perf_counter()
    snapshot(0)
    step = 0
    generator = torch.Generator().manual_seed(config.seed)
    texts = data["text"].to_numpy()
    bar = tqdm(total=total_steps, desc="fine-tuning", unit="step")
    for epoch in range(config.epochs):
        order = train[torch.randperm(len(train), generator=generator).numpy()]
        model.train()
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            enc = tokenizer(list(texts[batch]), padding=True, truncation=True, max_length=config.max_length,
                            return_tensors="pt")
            gold = torch.as_tensor(labels[batch])
            logits = model(**enc).logits
            loss = torch.nn.functional.cross_entropy(logits, gold)
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            recorder.observe(batch, logits, gold, epoch=epoch, step=step)   # training dynamics, from this pass
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch + 1)
            if step in due:
                bar.clear()
                snapshot(step)  # leaves the model in training mode, as it found it
    bar.close()
    recorder.close()
    log(f"demo: recorded {config.out} in {time.perf_counter() - started:.0f} s")
    return config.out
