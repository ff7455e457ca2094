"""`Recorder`: training dynamics from the training passes, a fused probe pass per snapshot."""

from __future__ import annotations

import logging
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
from t3vis.record.labels import resolve_labels
from t3vis.record.observations import (
    Observation,
    as_integer_vector,
    as_logits,
    check_classes,
    checkable_now,
    checked_step,
    whole_epoch,
)
from t3vis.record.probe import ProbeResult, probe, resolve_pooling, validate_probe_set
from t3vis.record.weights_policy import WeightsPolicy, weights_policy
from t3vis.store import schema
from t3vis.store.reader import open_run
from t3vis.store.writer import RunWriter, folder_bytes

log = logging.getLogger("t3vis.record")


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
    weights_bytes: int = 0        # this checkpoint's weights copied into the run (0: none, or referenced)
    run_weights_bytes: int = 0    # all weights the run keeps on disk after this snapshot


class Recorder:
    """Records a run: call `observe` in every training step and `snapshot` at checkpoints.

    texts and labels are the probe set (labels as class indices). ids default to 0..N-1;
    splits (e.g. "train" / "validation") tell held-out probes from training samples.
    Under torch.distributed every rank constructs the Recorder and calls `snapshot`;
    each probes its shard and rank 0 writes.

    keep_weights: which checkpoints keep their model weights, "all", "none", "every:K" or
    "last:N" (see WeightsPolicy). The default, "last:2", bounds the disk a run takes for weights to
    two copies of the model however many snapshots it has (a full copy per checkpoint silently
    filled disks: 92 MB each for all-MiniLM-L6-v2), while the newest checkpoint, and the one before,
    stay inspectable (saliency, attention, pruning). Pass "all" to inspect every checkpoint.
    save_weights=False is the older spelling of keep_weights="none".
    """

    def __init__(self, run_dir: str | Path, model, tokenizer, texts: Sequence[str], labels: Labels, *,
                 ids: Sequence[int] | np.ndarray | None = None, splits: Sequence[str] | str = "probe",
                 label_names: Sequence[str] | None = None, pooling: str = "auto", batch_size: int = 32,
                 max_length: int = 128, thumbnail_size: int = 32, save_weights: bool = True,
                 keep_weights: str | WeightsPolicy | None = None, progress: bool = False, exist_ok: bool = False):
        self.run_dir = Path(run_dir)
        self.model = model
        self.tokenizer = tokenizer
        inner = unwrap(model)
        self.num_labels = num_labels(inner)
        self.texts = list(texts)
        # the same rules as `t3vis record`: indices, or names matched to the model's (or label_names)
        self._id2label = getattr(inner.config, "id2label", None)
        resolved = resolve_labels(labels, self._id2label, self.num_labels, label_names=label_names)
        self.labels = validate_probe_set(self.texts, resolved.ids, self.num_labels)
        self.ids = np.arange(len(self.texts), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if len(self.ids) != len(self.texts) or len(np.unique(self.ids)) != len(self.ids):
            raise InvalidInputError("ids must give one unique integer per probe text")
        self.splits = [splits] * len(self.texts) if isinstance(splits, str) else list(splits)
        if len(self.splits) != len(self.texts):
            raise InvalidInputError(f"{len(self.splits)} splits for {len(self.texts)} texts: give one per text")
        self.label_names = resolved.names
        self.options = ProbeOptions(pooling=resolve_pooling(pooling, tokenizer), batch_size=batch_size,
                                    max_length=max_length, thumbnail_size=thumbnail_size)
        self.keep_weights = weights_policy(keep_weights, save_weights)
        self.progress = progress
        self.layout = find_attention_layout(inner)
        self.writer = RunWriter(self.run_dir)
        self._pending: list[Observation] = []      # observed, still on the device
        self._unwritten: list[pd.DataFrame] = []     # drained, not yet written: kept until a flush succeeds
        self._refused: list[int] = []                # steps whose labels a flush found out of range
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
            "label_map": {name: index for index, name in enumerate(self.label_names)},
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
        classes = np.array([], np.int64) if not len(texts) else validate_probe_set(
            list(texts), resolve_labels(labels, self._id2label, self.num_labels, label_names=self.label_names).ids,
            self.num_labels)
        run = open_run(self.run_dir)
        known = run.examples
        new = pd.DataFrame({"id": np.asarray(ids, np.int64), "split": split, "text": list(texts),
                            "label": classes, "probe_row": -1})
        new = new[~new["id"].isin(known["id"])]
        if len(new):
            self.writer.write_examples(pd.concat([known, new], ignore_index=True))

    # -- training dynamics -------------------------------------------------------------

    def observe(self, ids, logits, labels, *, epoch: float | None = None, step: int | None = None) -> None:
        """Note the gold-label probability of each example in a training batch. No device sync.

        ids: one integer id per batch row (-1 for a row that is no known example); logits:
        (rows, num_labels); labels: one class index per row. Tensors (on any device), arrays
        and lists are accepted. A call with arguments that do not fit raises InvalidInputError
        and records nothing. Labels on an accelerator are range-checked at the next flush
        (checking them here would wait for the device): a batch with a label outside the
        model's classes is then dropped, the others are written, and the flush raises.

        epoch: the training progress at the START of this step, fractional or whole (the
        Trainer's state.epoch while a step runs). The observation counts in epoch
        floor(epoch): with 4 steps per epoch the steps start at 0, 0.25, 0.5, 0.75 (epoch 0),
        then 1.0 (epoch 1). A value within 1e-9 of a whole number counts as that number, so
        a progress summed from float fractions does not fall into the epoch before. Pass the
        progress after the step instead and the last step of each epoch lands in the next.
        Without epoch, the k-th time an example is observed by this Recorder is its epoch k
        (k from 0): right for a loop that sees every example once per epoch and never
        resumes, wrong otherwise, so pass epoch where you can.

        step: the training step (default: the number of observe calls so far).
        """
        with torch.no_grad():
            logits_t = as_logits(logits, self.num_labels)
            rows = logits_t.shape[0]
            ids_t = as_integer_vector(ids, "ids", rows, "one id per batch row")
            labels_t = as_integer_vector(labels, "labels", rows, "one class index per batch row")
            if checkable_now(labels_t):
                check_classes(labels_t, self.num_labels)
            epoch_index = None if epoch is None else whole_epoch(epoch)
            step_number = None if step is None else checked_step(step)
            labels_t = labels_t.to(logits_t.device)
            out_of_range = (labels_t < 0) | (labels_t >= self.num_labels)
            safe = labels_t.clamp(0, self.num_labels - 1)   # an out-of-range gather would abort a CUDA context
            probs = logits_t.detach().float().softmax(-1)
            gold = probs.gather(1, safe.view(-1, 1)).squeeze(1)
            correct = probs.argmax(-1) == safe
        self._observe_calls += 1
        self._pending.append(Observation(ids_t.detach(), gold, correct, out_of_range.any(), epoch_index,
                                          self._observe_calls if step_number is None else step_number))

    def _drain_observations(self) -> pd.DataFrame:
        """The observations not yet written, as one frame; they stay owed until a flush writes them."""
        while self._pending:
            observation = self._pending[0]
            frame = observation.frame()
            self._pending.pop(0)
            if frame is None:
                self._refused.append(observation.step)
                continue
            self._count_implicit_epochs(frame)
            self._unwritten.append(frame)
        if not self._unwritten:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                                 zip(schema.DYNAMICS_COLUMNS, ("int64", "int32", "int64", "float32", "bool"))})
        return pd.concat(self._unwritten, ignore_index=True)

    def _count_implicit_epochs(self, obs: pd.DataFrame) -> None:
        """Without an explicit epoch, the k-th time an example is seen is its epoch k."""
        implicit = obs["epoch"] < 0
        ids = obs.loc[implicit, "id"]
        earlier = ids.map(self._seen).fillna(0).astype(np.int64)
        obs.loc[implicit, "epoch"] = earlier + ids.groupby(ids).cumcount()
        for example_id, count in ids.value_counts().items():
            self._seen[example_id] = self._seen.get(example_id, 0) + int(count)

    def flush(self) -> None:
        """Write pending observations (a collective call under torch.distributed).

        Observations stay owed until they are written: a flush that fails keeps them for the next.
        A batch refused for its labels (see `observe`) makes the flush raise on every rank,
        after the others are written."""
        owed = self._drain_observations()
        refused, self._refused = self._refused, []
        gathered = dist_utils.gather_to_main((owed, refused))
        # rank 0 now owes every rank's observations; the others owe none
        self._unwritten = [] if gathered is None else [pd.concat([frame for frame, _ in gathered], ignore_index=True)]
        refused_anywhere = [] if gathered is None else sorted(step for _, steps in gathered for step in steps)
        dist_utils.on_main(lambda: self._write_owed(refused_anywhere))

    def _write_owed(self, refused_steps: list[int]) -> None:
        self.writer.append_dynamics(self._unwritten[0])
        self._unwritten.clear()
        if refused_steps:
            raise InvalidInputError(f"observe() got labels outside the model's classes 0..{self.num_labels - 1} "
                                    f"at step(s) {refused_steps}: those batches were dropped, the others written; "
                                    "pass class indices (map label names to 0..C-1 first)")

    # -- snapshots ---------------------------------------------------------------------

    def snapshot(self, step: int, epoch: float | None = None, metrics: dict | None = None,
                 weights_location: str | Path | None = None) -> SnapshotSummary:
        """One fused probe pass; writes checkpoints/step-XXXXXXXX atomically on rank 0.

        weights_location: a folder that already holds this checkpoint's weights (e.g. the Trainer's
        checkpoint-<step>): meta.json references it and nothing is copied. Otherwise the weights are
        saved into the checkpoint if the keep_weights policy keeps them, and the weights of earlier
        checkpoints the policy no longer keeps are deleted."""
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
            if where is None and self._keeps_weights_of(step):
                _save_pretrained(unwrap(self.model), stage.weights_dir)
                self.tokenizer.save_pretrained(stage.weights_dir)
        self._drop_unkept_weights()
        summary_metrics = {**(metrics or {}), **stage.metrics}  # as meta.json has them
        summary = SnapshotSummary(int(step), epoch, summary_metrics,
                                  self.run_dir / schema.CHECKPOINTS_DIR / schema.checkpoint_dirname(step),
                                  weights_bytes=self.writer.saved_weights_bytes(step),
                                  run_weights_bytes=self._run_weights_bytes())
        log.info("checkpoint step %d: weights %s; the run keeps %.1f MB of weights (keep_weights=%r)", step,
                 f"referenced at {where}" if where else f"{summary.weights_bytes / 1e6:.1f} MB",
                 summary.run_weights_bytes / 1e6, str(self.keep_weights))
        return summary

    def _keeps_weights_of(self, step: int) -> bool:
        """Whether the policy keeps the weights of a new checkpoint at `step`, among those on disk."""
        steps = sorted({*self.writer.checkpoint_steps(), int(step)})
        return self.keep_weights.keeps(steps.index(int(step)), len(steps))

    def _drop_unkept_weights(self) -> None:
        """Delete the run's own weights of the checkpoints the policy no longer keeps."""
        if not self.keep_weights.deletes:
            return
        steps = self.writer.checkpoint_steps()
        for index, step in enumerate(steps):
            if not self.keep_weights.keeps(index, len(steps)):
                self.writer.drop_weights(step)

    def _run_weights_bytes(self) -> int:
        """Bytes of all weights folders inside the run (referenced Trainer checkpoints not counted)."""
        return sum(folder_bytes(p) for p in (self.run_dir / schema.CHECKPOINTS_DIR).glob(f"*/{schema.WEIGHTS_DIR}"))

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
                                "with the checkpoint: pass keep_weights='none', or weights_location to snapshot()")
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


def _version() -> str:
    from t3vis import __version__
    return __version__
