"""`Recorder`: training dynamics from the training passes, a fused probe pass per snapshot."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd
import torch
from torch import nn

from t3vis.errors import InvalidInputError
from t3vis.models.batches import Labels, num_labels, unwrap
from t3vis.models.structure import find_attention_layout
from t3vis.record import distributed as dist_utils
from t3vis.record.attention_stats import AttentionStats
from t3vis.record.probe import ProbeResult, probe, resolve_pooling, validate_probe_set
from t3vis.store import schema
from t3vis.store.reader import open_run
from t3vis.store.writer import RunWriter


class ProbeOptions(TypedDict):
    """How every snapshot probes; written into run.json as they are."""

    pooling: str
    batch_size: int
    max_length: int
    thumbnail_size: int


@dataclass(frozen=True)
class SnapshotSummary:
    step: int
    epoch: float | None
    metrics: dict
    path: Path | None   # None on ranks other than 0


class Recorder:
    """Records a run: call `observe` in every training step and `snapshot` at checkpoints.

    texts and labels are the probe set (labels as class indices). ids default to 0..N-1;
    splits (e.g. "train" / "validation") tell held-out probes from training samples.
    Under torch.distributed every rank constructs the Recorder and calls `snapshot`;
    each probes its shard and rank 0 writes.
    """

    def __init__(self, run_dir: str | Path, model, tokenizer, texts: Sequence[str], labels: Labels, *,
                 ids: Sequence[int] | np.ndarray | None = None, splits: Sequence[str] | str = "probe",
                 label_names: Sequence[str] | None = None, pooling: str = "auto", batch_size: int = 32,
                 max_length: int = 128, thumbnail_size: int = 32, save_weights: bool = True,
                 progress: bool = False, exist_ok: bool = False):
        self.run_dir = Path(run_dir)
        self.model = model
        self.tokenizer = tokenizer
        inner = unwrap(model)
        self.num_labels = num_labels(inner)
        self.texts = list(texts)
        self.labels = validate_probe_set(self.texts, labels, self.num_labels)
        self.ids = np.arange(len(self.texts), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if len(self.ids) != len(self.texts) or len(np.unique(self.ids)) != len(self.ids):
            raise InvalidInputError("ids must give one unique integer per probe text")
        self.splits = [splits] * len(self.texts) if isinstance(splits, str) else list(splits)
        if len(self.splits) != len(self.texts):
            raise InvalidInputError(f"{len(self.splits)} splits for {len(self.texts)} texts: give one per text")
        self.label_names = list(label_names) if label_names is not None else _label_names(inner, self.num_labels)
        if len(self.label_names) != self.num_labels:
            raise InvalidInputError(f"{len(self.label_names)} label names for a model with {self.num_labels} classes")
        self.options = ProbeOptions(pooling=resolve_pooling(pooling, tokenizer), batch_size=batch_size,
                                    max_length=max_length, thumbnail_size=thumbnail_size)
        self.save_weights = save_weights
        self.progress = progress
        self.layout = find_attention_layout(inner)
        self.writer = RunWriter(self.run_dir)
        self._pending: list[tuple] = []
        self._seen: dict[int, int] = {}   # id -> passes observed so far, the next implicit epoch
        self._observe_calls = 0
        dist_utils.on_main(lambda: self._create_run(exist_ok))

    def use_model(self, model) -> None:
        """Probe another model from now on (the next checkpoint of the same architecture)."""
        inner = unwrap(model)
        if num_labels(inner) != self.num_labels:
            raise InvalidInputError(f"the new model has {num_labels(inner)} classes, the run {self.num_labels}")
        layout = find_attention_layout(inner)
        if (layout.num_layers, layout.num_heads) != (self.layout.num_layers, self.layout.num_heads):
            raise InvalidInputError("the new model has another number of layers or heads than the run")
        self.model, self.layout = model, layout

    # -- run creation ------------------------------------------------------------------

    def _create_run(self, exist_ok: bool) -> None:
        if (self.run_dir / schema.RUN_META).exists():
            if not exist_ok:
                raise InvalidInputError(f"{self.run_dir} already holds a run; choose a new folder, or pass "
                                        "exist_ok=True to add checkpoints to it")
            existing = open_run(self.run_dir)
            probe = existing.probe_examples
            if len(probe) != len(self.ids) or not np.array_equal(probe["id"].to_numpy(), self.ids):
                raise InvalidInputError(f"{self.run_dir} was recorded with a different probe set; "
                                        "use a new folder for this one")
            return
        inner = unwrap(self.model)
        meta = {
            "t3vis_version": _version(),
            "model": {
                "name_or_path": str(getattr(inner.config, "_name_or_path", "") or ""),
                "architecture": type(inner).__name__,
                "model_type": getattr(inner.config, "model_type", None),
                "num_parameters": int(sum(p.numel() for p in inner.parameters())),
            },
            "task": "sequence-classification",
            "label_names": self.label_names,
            "num_layers": self.layout.num_layers,
            "num_heads": self.layout.num_heads,
            "hidden_size": self.layout.hidden_size,
            "num_probe": len(self.texts),
            **self.options,
        }
        examples = pd.DataFrame({"id": self.ids, "split": self.splits, "text": self.texts,
                                 "label": self.labels, "probe_row": np.arange(len(self.ids))})
        RunWriter.create(self.run_dir, meta, examples)

    def add_examples(self, ids: Sequence[int] | np.ndarray, texts: Sequence[str], labels: Labels,
                     split: str = "train") -> None:
        """Register training examples that are not probed, so the data map can show their text."""
        if dist_utils.rank() != 0:
            return
        classes = validate_probe_set(list(texts), labels, self.num_labels) if len(texts) else np.array([], np.int64)
        run = open_run(self.run_dir)
        known = run.examples
        new = pd.DataFrame({"id": np.asarray(ids, np.int64), "split": split, "text": list(texts),
                            "label": classes, "probe_row": -1})
        new = new[~new["id"].isin(known["id"])]
        if len(new):
            self.writer.write_examples(pd.concat([known, new], ignore_index=True))

    # -- training dynamics -------------------------------------------------------------

    def observe(self, ids, logits: torch.Tensor, labels: torch.Tensor, *, epoch: int | None = None,
                step: int | None = None) -> None:
        """Note the gold-label probability of each example in a training batch. No device sync."""
        with torch.no_grad():
            labels = torch.as_tensor(labels, device=logits.device).long().view(-1)
            probs = logits.detach().float().softmax(-1)
            gold = probs.gather(1, labels.view(-1, 1)).squeeze(1)
            correct = probs.argmax(-1) == labels
        self._observe_calls += 1
        self._pending.append((ids, gold, correct, epoch, self._observe_calls if step is None else step))

    def _drain_observations(self) -> pd.DataFrame:
        frames = []
        for ids, gold, correct, epoch, step in self._pending:
            ids = np.asarray(ids.cpu() if torch.is_tensor(ids) else ids, dtype=np.int64).reshape(-1)
            frames.append(pd.DataFrame({"id": ids, "epoch": -1 if epoch is None else int(epoch), "step": int(step),
                                        "gold_prob": gold.cpu().numpy(), "correct": correct.cpu().numpy()}))
        self._pending.clear()
        if not frames:
            return pd.DataFrame(columns=list(schema.DYNAMICS_COLUMNS))
        obs = pd.concat(frames, ignore_index=True)
        obs = obs[obs["id"] >= 0].reset_index(drop=True)  # -1: a batch row no id was found for
        # without an explicit epoch, the k-th time an example is seen is its epoch k
        implicit = obs["epoch"] < 0
        ids = obs.loc[implicit, "id"]
        earlier = ids.map(self._seen).fillna(0).astype(np.int64)
        obs.loc[implicit, "epoch"] = earlier + ids.groupby(ids).cumcount()
        for example_id, count in ids.value_counts().items():
            self._seen[example_id] = self._seen.get(example_id, 0) + int(count)
        return obs

    def flush(self) -> None:
        """Write pending observations (a collective call under torch.distributed)."""
        gathered = dist_utils.gather_to_main(self._drain_observations())
        if gathered is not None:
            self.writer.append_dynamics(pd.concat(gathered, ignore_index=True))

    # -- snapshots ---------------------------------------------------------------------

    def snapshot(self, step: int, epoch: float | None = None, metrics: dict | None = None,
                 weights_location: str | Path | None = None) -> SnapshotSummary:
        """One fused probe pass; writes checkpoints/step-XXXXXXXX atomically on rank 0."""
        self.flush()
        started = time.perf_counter()
        if not dist_utils.is_distributed():
            return self._write_snapshot(step, epoch, metrics, weights_location, None, started)
        gathered = dist_utils.gather_to_main(self._probe(dist_utils.shard(len(self.texts)), step))
        summary = dist_utils.on_main(
            lambda: self._write_snapshot(step, epoch, metrics, weights_location, gathered, started))
        return summary if summary is not None else SnapshotSummary(int(step), epoch, {}, None)

    def _write_snapshot(self, step: int, epoch: float | None, metrics: dict | None, weights_location,
                        gathered: list[ProbeResult] | None, started: float) -> SnapshotSummary:
        """gathered: the ranks' results, or None to probe here, straight into the memory-mapped file."""
        where = None if weights_location is None else str(weights_location)
        if where is not None:  # before the checkpoint appears, so the server never sees it unnamed
            self.writer.add_weights_root(where)
        with self.writer.checkpoint(step, epoch=epoch, metrics=metrics or {}, weights_location=where) as stage:
            hidden = stage.hidden_array(self.layout.num_layers + 1, len(self.texts), self.layout.hidden_size)
            if gathered is None:
                result = self._probe(np.arange(len(self.texts)), step, hidden_out=hidden)
            else:
                result = _merge(gathered)
                hidden[:] = result.hidden
            _flush(hidden)
            result.hidden = hidden  # the file holds them now; drop the ranks' in-memory copy
            stage.metrics.update(self._probe_metrics(result), probe_seconds=time.perf_counter() - started)
            stage.write_outputs(self._outputs_frame(result))
            stage.write_heads(_heads_arrays(result))
            stage.write_gate_grads(result.gate_grads)
            if self.save_weights and where is None:
                _save_pretrained(unwrap(self.model), stage.weights_dir)
                self.tokenizer.save_pretrained(stage.weights_dir)
        summary_metrics = {**(metrics or {}), **stage.metrics}  # as meta.json has them
        return SnapshotSummary(int(step), epoch, summary_metrics,
                               self.run_dir / schema.CHECKPOINTS_DIR / schema.checkpoint_dirname(step))

    def _probe(self, rows: np.ndarray, step: int, hidden_out: np.ndarray | None = None) -> ProbeResult:
        bar = None
        if self.progress and dist_utils.rank() == 0:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(rows), desc=f"probe step {step}", unit="ex", leave=False)
        try:
            return probe(self.model, self.tokenizer, [self.texts[i] for i in rows], self.labels[rows],
                         layout=self.layout, hidden_out=hidden_out, progress=bar.update if bar else None,
                         **self.options)
        finally:
            if bar is not None:
                bar.close()

    def _outputs_frame(self, r: ProbeResult) -> pd.DataFrame:
        probs = r.probs
        preds = np.where(r.nan, -1, np.nan_to_num(r.logits, nan=-np.inf).argmax(1))
        gold = probs[np.arange(len(self.labels)), self.labels]
        return pd.DataFrame({"id": self.ids, "pred": preds, "loss": r.loss, "gold_prob": gold,
                             "correct": preds == self.labels, "nan": r.nan, "probs": list(probs)})

    def _probe_metrics(self, r: ProbeResult) -> dict:
        ok = ~r.nan
        correct = (r.logits.argmax(1) == self.labels) & ok
        splits = np.asarray(self.splits)
        metrics = {"probe_accuracy": float(correct.mean()),
                   "probe_loss": float(np.nanmean(r.loss)) if ok.any() else None,
                   "nan_examples": int(r.nan.sum())}
        for split in sorted(set(self.splits)):
            where = splits == split
            metrics[f"{split}_accuracy"] = float(correct[where].mean())
            if ok[where].any():
                metrics[f"{split}_loss"] = float(np.nanmean(r.loss[where]))
        return metrics

    def close(self) -> None:
        self.flush()


def _flush(array: np.ndarray) -> None:
    """Write a memory-mapped array's pages to its file (a plain array has none)."""
    if isinstance(array, np.memmap):
        array.flush()


def _save_pretrained(model: nn.Module, folder: Path) -> None:
    save = getattr(model, "save_pretrained", None)
    if not callable(save):
        raise InvalidInputError(f"{type(model).__name__} has no save_pretrained(), so its weights cannot be saved "
                                "with the checkpoint: pass save_weights=False, or weights_location to snapshot()")
    save(folder, safe_serialization=True)


def _merge(parts: list[ProbeResult]) -> ProbeResult:
    if len(parts) == 1:
        return parts[0]
    attention = AttentionStats(parts[0].attention.num_layers, parts[0].attention.num_heads,
                               parts[0].attention.thumbnail_size)
    for p in parts:
        attention.merge(p.attention)
    return ProbeResult(np.concatenate([p.hidden for p in parts], axis=1),
                       np.concatenate([p.logits for p in parts]), np.concatenate([p.loss for p in parts]),
                       np.concatenate([p.gate_grads for p in parts]), attention)


def _heads_arrays(r: ProbeResult) -> dict[str, np.ndarray]:
    raw = np.abs(r.gate_grads).sum(0)                                    # (L, H)
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    importance = np.divide(raw, norms, out=np.zeros_like(raw), where=norms > 0)
    return {"importance": importance.astype(np.float32), "importance_raw": raw.astype(np.float32),
            **r.attention.finish()}


def _label_names(model, n_classes: int) -> list[str]:
    id2label = getattr(model.config, "id2label", None) or {}
    return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n_classes)]


def _version() -> str:
    from t3vis import __version__
    return __version__
