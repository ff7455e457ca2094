"""Synthetic runs for the benchmarks: any number of examples, written through the store's writer,
no model; and projections seeded into a run's cache as if the server had computed them."""

from __future__ import annotations

from pathlib import Path


def synthetic_run(path: Path, n: int, *, hidden_dims: int = 8, seed: int = 0) -> Path:
    """A run of n probed examples (text, label, outputs, dynamics for half of them), no model."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from t3vis.store import schema
    from t3vis.store.writer import RunWriter

    rng = np.random.default_rng(seed)
    words = np.array("the a movie film was is great bad boring fun plot actor script good awful love hate".split())
    lengths = rng.integers(4, 14, n)
    flat = words[rng.integers(0, len(words), int(lengths.sum()))]
    texts = [" ".join(x) for x in np.split(flat, np.cumsum(lengths)[:-1])]
    labels = rng.integers(0, 2, n)
    examples = pd.DataFrame({"id": np.arange(n), "split": np.where(np.arange(n) % 5 == 0, "validation", "train"),
                             "text": texts, "label": labels, "probe_row": np.arange(n)})
    meta = {"model": {"name_or_path": "synthetic", "architecture": "none", "model_type": None, "num_parameters": 0},
            "task": "sequence-classification", "label_names": ["neg", "pos"], "num_layers": 1, "num_heads": 2,
            "hidden_size": hidden_dims, "num_probe": n, "pooling": "cls", "max_length": 64, "thumbnail_size": 4}
    writer = RunWriter.create(path, meta, examples)
    probs1 = rng.random(n).astype(np.float32)
    probs = np.stack([1 - probs1, probs1], axis=1)
    pred = probs.argmax(1).astype(np.int32)
    gold = probs[np.arange(n), labels]
    with writer.checkpoint(100, epoch=1.0, metrics={"probe_accuracy": float((pred == labels).mean())}) as stage:
        hidden = stage.hidden_array(2, n, hidden_dims)
        centres = rng.normal(size=(8, hidden_dims)) * 3                      # 8 clusters, so layouts have shape
        hidden[:] = (centres[rng.integers(0, 8, n)] + rng.normal(size=(2, n, hidden_dims))).astype(np.float16)
        hidden.flush()
        pq.write_table(pa.table({
            "id": pa.array(np.arange(n, dtype=np.int64)), "pred": pa.array(pred),
            "loss": pa.array(-np.log(gold)), "gold_prob": pa.array(gold), "correct": pa.array(pred == labels),
            "nan": pa.array(np.zeros(n, bool)),
            "probs": pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), 2)}),
            stage.path / schema.OUTPUTS, compression="zstd")
        stage.write_heads({"importance": np.ones((1, 2), np.float32), "importance_raw": np.ones((1, 2), np.float32),
                           "thumbnails": np.zeros((1, 2, 4, 4))})
    half = np.arange(0, n, 2)
    for epoch in range(2):
        gp = rng.random(len(half)).astype(np.float32)
        writer.append_dynamics(pd.DataFrame({"id": half, "epoch": epoch, "step": epoch + 1, "gold_prob": gp,
                                             "correct": gp > 0.5}))
    return path


def seed_projection(run_dir: Path, step: int, layer: int, method: str, layout, preservation) -> None:
    """Put a layout (N, 2) and its preservation (N,) where the server looks for them (a run with
    one checkpoint: its aligned and unaligned layouts share a key)."""
    import t3vis
    from t3vis.server.projections import layout_key, preservation_key
    from t3vis.store import schema
    from t3vis.store.cache import ArrayCache, data_fingerprint

    ck = t3vis.open_run(run_dir).checkpoint(step)
    key = layout_key(step, layer, method, False, [(step, data_fingerprint(ck.path / schema.HIDDEN))])
    cache = ArrayCache(run_dir)
    cache.put(key, layout)
    cache.put(preservation_key(key), preservation)
