"""`Recorder`: training dynamics from the training passes, a fused probe pass per snapshot."""

from __future__ import annotations

import atexit
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import pandas as pd
import torch

from t3vis.errors import InvalidInputError
from t3vis.models.batches import num_labels, unwrap
from t3vis.models.structure import AttentionLayout, find_stacks
from t3vis.record import distributed as dist_utils
from t3vis.record import shards
from t3vis.record.attention_stats import AttentionStats
from t3vis.record.model_weights import save_model_weights
from t3vis.record.observations import Observation, checked_step, whole_epoch
from t3vis.record.probe import ProbeResult, StackRecord, StackSinks, TokenArrays, default_stack, probe_examples
from t3vis.record.weights_policy import WeightsPolicy, weights_policy
from t3vis.store import schema
from t3vis.store.reader import open_run
from t3vis.store.rows import RaggedRows
from t3vis.store.writer import CheckpointStage, RunWriter, folder_bytes
from t3vis.tasks import get_task
from t3vis.tasks.arguments import as_integer_vector
from t3vis.tasks.base import Examples, Task, TrainingRow
from t3vis.tasks.labels import resolve_categories

if TYPE_CHECKING:
    from t3vis.server.launch import ViewerProcess

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

    texts and labels are the probe set. task says what an example is (t3vis.tasks):
    "classification" (the default): labels are class indices or names;
    "causal-lm": texts are whole texts (labels None), or prompts with their completions as
    labels (targets=); "seq2seq": texts are sources and labels (targets=) their target texts.
    categories (generative tasks): a class per probe example that the model does not predict,
    such as a topic or a language, names or indices into label_names; the viewer colours and
    filters the examples by it (stored as the examples' label, its names as label_names).
    ids default to 0..N-1; splits (e.g. "train" / "validation") tell held-out probes from
    training samples. Under torch.distributed every rank constructs the Recorder and calls
    `snapshot`; each probes its shard and rank 0 writes.

    keep_weights: which checkpoints keep their model weights, "all", "none", "every:K" or
    "last:N" (see WeightsPolicy). The default, "last:2", bounds the disk a run takes for weights to
    two copies of the model however many snapshots it has (a full copy per checkpoint silently
    filled disks: 92 MB each for all-MiniLM-L6-v2), while the newest checkpoint, and the one before,
    stay inspectable (saliency, attention, pruning). Pass "all" to inspect every checkpoint.
    save_weights=False is the older spelling of keep_weights="none".

    serve=True starts the viewer of this run on rank 0 now, in a child process at a lower CPU
    priority (port serve_port, or the next free one; its URL printed once), so the page follows the
    run while it trains and training keeps its pace. It stops with the script, or at close(),
    unless keep_serving=True: then the script's end waits, serving, until Ctrl+C.
    """

    def __init__(self, run_dir: str | Path, model, tokenizer, texts: Sequence[str], labels=None, *,
                 targets: Sequence[str] | None = None, task: str | Task | None = None,
                 categories: Sequence | None = None, ids: Sequence[int] | np.ndarray | None = None,
                 splits: Sequence[str] | str = "probe",
                 label_names: Sequence[str] | None = None, pooling: str = "auto", batch_size: int = 32,
                 max_length: int = 128, thumbnail_size: int = 32, save_weights: bool = True,
                 keep_weights: str | WeightsPolicy | None = None, progress: bool = False, exist_ok: bool = False,
                 serve: bool = False, serve_port: int = 8737, keep_serving: bool = False):
        self.run_dir = Path(run_dir)
        self.model = model
        self.tokenizer = tokenizer
        self.task = get_task(task)
        inner = unwrap(model)
        self.task.check_model(inner)
        if labels is not None and targets is not None:
            raise InvalidInputError("give labels or targets, not both (targets is the generative tasks' name)")
        # class labels resolve by `t3vis record`'s rules: indices, or names matched to the model's
        self.examples = self.task.examples(inner, list(texts), targets if targets is not None else labels,
                                           label_names=label_names)
        if categories is not None:
            if self.task.format.has_classes:
                raise InvalidInputError("a classifier's examples are classed by their labels; categories= is for "
                                        "generative tasks")
            resolved = resolve_categories(categories, len(self.examples), label_names)
            self.examples = replace(self.examples, labels=resolved.ids, label_names=resolved.names)
        self.texts = self.examples.texts
        self.labels = self.examples.labels
        self.ids = np.arange(len(self.texts), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if len(self.ids) != len(self.texts) or len(np.unique(self.ids)) != len(self.ids):
            raise InvalidInputError("ids must give one unique integer per probe text")
        self.splits = [splits] * len(self.texts) if isinstance(splits, str) else list(splits)
        if len(self.splits) != len(self.texts):
            raise InvalidInputError(f"{len(self.splits)} splits for {len(self.texts)} texts: give one per text")
        self.label_names = self.examples.label_names
        self.options = ProbeOptions(pooling=self.task.resolve_pooling(pooling, tokenizer), batch_size=batch_size,
                                    max_length=max_length, thumbnail_size=thumbnail_size)
        self.truncated = self._count_truncated(max_length)
        if self.truncated:
            log.warning("%d of %d probe examples are longer than max_length=%d tokens and are truncated",
                        self.truncated, len(self.texts), max_length)
        self.keep_weights = weights_policy(keep_weights, save_weights)
        self.progress = progress
        self.stacks = find_stacks(inner)
        self.default_stack = default_stack(self.stacks)
        self.writer = RunWriter(self.run_dir)
        self._pending: list[Observation] = []      # observed, still on the device
        self._unwritten: list[pd.DataFrame] = []     # drained, not yet written: kept until a flush succeeds
        self._refused: list[int] = []                # steps whose labels a flush found out of range
        self._seen: dict[int, int] = {}   # id -> passes observed so far, the next implicit epoch
        self._observe_calls = 0
        dist_utils.on_main(lambda: self._create_run(exist_ok))
        self.viewer: ViewerProcess | None = None     # the viewer serve=True started (rank 0)
        self.keep_serving = keep_serving
        if serve and dist_utils.rank() == 0:
            self._start_viewer(serve_port)

    def _count_truncated(self, max_length: int, chunk: int = 8192) -> int:
        """Probe examples longer than max_length tokens, tokenised a chunk at a time: the tokenizer's
        output for a whole large probe set would take more memory than the probe pass."""
        n = len(self.examples)
        return sum(int((self.task.token_lengths(self.tokenizer, self.examples.subset(np.arange(i, min(i + chunk, n))))
                        > max_length).sum()) for i in range(0, n, chunk))

    def _start_viewer(self, port: int) -> None:
        # the server is imported only where it is asked for
        from t3vis.server.launch import start_viewer

        self.viewer = start_viewer(self.run_dir, port=port)
        if self.keep_serving:
            atexit.register(_serve_until_interrupted, self.viewer)
        else:                       # a child process: it would outlive the script on its own
            atexit.register(self.viewer.stop)

    @property
    def layout(self) -> AttentionLayout:
        """The default stack (a classifier's only one)."""
        return next(s for s in self.stacks if s.stack == self.default_stack)

    def use_model(self, model) -> None:
        """Probe another model from now on (the next checkpoint of the same architecture)."""
        inner = unwrap(model)
        self.task.check_model(inner)
        if self.task.format.has_classes and num_labels(inner) != len(self.label_names):
            raise InvalidInputError(f"the new model has {num_labels(inner)} classes, the run {len(self.label_names)}")
        stacks = find_stacks(inner)
        if [(s.stack, s.num_layers, s.num_heads) for s in stacks] != \
                [(s.stack, s.num_layers, s.num_heads) for s in self.stacks]:
            raise InvalidInputError("the new model has another number of layers or heads than the run")
        self.model, self.stacks = model, stacks

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
            "task": self.task.name,
            "stacks": [{"name": s.stack, "num_layers": s.num_layers, "num_heads": s.num_heads,
                        "hidden_size": s.hidden_size, "hidden": s.hidden_output is not None} for s in self.stacks],
            "default_stack": self.default_stack,
            "label_names": self.label_names,
            "label_map": {name: index for index, name in enumerate(self.label_names)},
            "num_layers": self.layout.num_layers,
            "num_heads": self.layout.num_heads,
            "hidden_size": self.layout.hidden_size,
            "num_probe": len(self.texts),
            "truncated": self.truncated,
            **self.options,
        }
        RunWriter.create(self.run_dir, meta, self._examples_frame(self.ids, self.examples, self.splits,
                                                                   np.arange(len(self.ids))))

    def _examples_frame(self, ids, examples: Examples, splits, probe_rows) -> pd.DataFrame:
        columns = {"id": np.asarray(ids, np.int64), "split": splits, "text": examples.texts,
                   "label": examples.labels, "probe_row": probe_rows}
        if "target" in self.task.format.example_columns:   # "" where a whole text is the target
            columns["target"] = examples.targets if examples.targets is not None else [""] * len(examples)
        return pd.DataFrame(columns)

    def add_examples(self, ids: Sequence[int] | np.ndarray, texts: Sequence[str], labels=None,
                     split: str = "train", *, targets: Sequence[str] | None = None) -> None:
        """Register training examples that are not probed, so the data map can show their text
        (labels: their classes; targets: a generative task's target texts)."""
        if dist_utils.rank() != 0 or not len(texts):
            return
        examples = self.task.examples(unwrap(self.model), list(texts), targets if targets is not None else labels,
                                      label_names=self.label_names or None, what="examples added")
        self._write_examples(self._examples_frame(ids, examples, split, -1))

    def register_examples(self, ids: Sequence[int], rows: Sequence[TrainingRow], split: str = "train") -> None:
        """Register training rows read back from a tokenised dataset (the Trainer callback's), as they are."""
        if dist_utils.rank() != 0 or not len(rows):
            return
        examples = Examples([r.text for r in rows], np.array([r.label for r in rows], np.int64),
                            None if rows[0].target is None else [r.target or "" for r in rows])
        self._write_examples(self._examples_frame(ids, examples, split, -1))

    def _write_examples(self, new: pd.DataFrame) -> None:
        known = open_run(self.run_dir).examples
        new = new[~new["id"].isin(known["id"])]
        if len(new):
            self.writer.write_examples(pd.concat([known, new], ignore_index=True))

    # -- training dynamics -------------------------------------------------------------

    def observe(self, ids, logits, labels, *, epoch: float | None = None, step: int | None = None) -> None:
        """Note the gold-label probability of each example in a training batch. No device sync.

        ids: one integer id per batch row (-1 for a row that is no known example).
        Classification: logits (rows, num_labels) and one class index per row; tensors (on any
        device), arrays and lists are accepted. Generative tasks: the model's logits (rows,
        tokens, vocabulary) and the batch's token labels (rows, tokens) with -100 where there is
        no loss, as the model was trained on; what is kept per row is its mean target-token
        probability and its token accuracy, at the cost of one log-sum-exp over the logits.
        A call with arguments that do not fit raises InvalidInputError
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
        epoch_index = None if epoch is None else whole_epoch(epoch)
        step_number = None if step is None else checked_step(step)
        gold, correct, refused = self.task.observed(unwrap(self.model), logits, labels)
        self._queue(ids, gold, correct, refused, epoch_index, step_number)

    def observe_scores(self, ids, confidence: torch.Tensor, correct: torch.Tensor, *, epoch: float | None = None,
                       step: int | None = None) -> None:
        """observe() for a training step whose model gives no logits but per-row scores already (a
        fused language-modelling head, e.g. TRL's): each row's gold-label probability, or mean
        target-token probability (NaN for a row with nothing scored), and whether it was right, or its
        token accuracy. Tensors on any device; no device sync."""
        epoch_index = None if epoch is None else whole_epoch(epoch)
        step_number = None if step is None else checked_step(step)
        if not torch.is_tensor(confidence) or not torch.is_tensor(correct) or confidence.dim() != 1 \
                or correct.shape != confidence.shape:
            raise InvalidInputError("confidence and correct must be tensors of one value per batch row")
        refused = torch.zeros((), dtype=torch.bool, device=confidence.device)
        self._queue(ids, confidence.detach(), correct.detach(), refused, epoch_index, step_number)

    def _queue(self, ids, gold: torch.Tensor, correct: torch.Tensor, refused: torch.Tensor, epoch: int | None,
               step: int | None) -> None:
        ids_t = as_integer_vector(ids, "ids", gold.shape[0], "one id per batch row")
        self._observe_calls += 1
        self._pending.append(Observation(ids_t.detach(), gold, correct, refused, epoch,
                                         self._observe_calls if step is None else step))

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
        self.writer.append_dynamics(self._unwritten[0], fractional=self.task.format.correct_is_fraction)
        self._unwritten.clear()
        if refused_steps:
            raise InvalidInputError(f"observe() got labels outside {self.task.label_range(unwrap(self.model))} "
                                    f"at step(s) {refused_steps}: those batches were dropped, the others written; "
                                    "pass class indices (map label names to 0..C-1 first), or token ids")

    # -- snapshots ---------------------------------------------------------------------

    def snapshot(self, step: int, epoch: float | None = None, metrics: dict | None = None,
                 weights_location: str | Path | None = None) -> SnapshotSummary:
        """One fused probe pass; writes checkpoints/step-XXXXXXXX atomically on rank 0.

        weights_location: a folder that already holds this checkpoint's weights (e.g. the Trainer's
        checkpoint-<step>): meta.json references it and nothing is copied. Otherwise the weights are
        saved into the checkpoint if the keep_weights policy keeps them, and the weights of earlier
        checkpoints the policy no longer keeps are deleted.

        The per-example arrays (hidden states, gate gradients; a generative task's per-token values)
        go to the checkpoint's staging folder a batch at a time, so memory does not grow with the
        probe set. Under torch.distributed each rank that sees that folder (one machine, or a shared
        disk) writes its shard there, and rank 0 copies the shards into place one at a time, a
        chunk at a time; a rank that does not writes its shard in a temporary folder of its own and
        sends it to rank 0 a chunk at a time."""
        self.flush()
        started = time.perf_counter()
        if not dist_utils.is_distributed():
            return self._write_snapshot(step, epoch, metrics, weights_location, started, self._probe_all)
        if dist_utils.rank() != 0:
            self._probe_for_main(step)
            return SnapshotSummary(int(step), epoch, {}, None)
        return self._snapshot_on_main(step, epoch, metrics, weights_location, started)

    def _probe_all(self, stage: CheckpointStage, step: int) -> ProbeResult:
        """A single process probes every example straight into the checkpoint's files."""
        n = len(self.texts)
        return self._probe(np.arange(n), step, self._stage_sinks(stage, n), tokens_out=self._token_rows(stage, n))

    def _snapshot_on_main(self, step: int, epoch: float | None, metrics: dict | None, weights_location,
                          started: float) -> SnapshotSummary:
        """Rank 0's side of a distributed snapshot: it opens the checkpoint, tells the others where
        it stages, probes its own shard, merges every rank's, writes the rest; _probe_for_main is
        the others' side, collective for collective."""
        shared = False

        def probe_ranks(stage: CheckpointStage, step: int) -> ProbeResult:
            nonlocal shared
            token = secrets.token_hex(16)
            marker = stage.path / stage.scratch(shards.MARKER)
            marker.write_text(token)
            dist_utils.share_from_main((str(stage.path), token))
            shared = True
            sees = dist_utils.from_every_rank(True)       # each other rank reads the marker: sees_stage
            parts = dist_utils.gather_to_main(self._probe_shard(lambda: stage, step, durable=False))
            result = self._collect_shards(stage, parts, sees)
            marker.unlink()
            return result

        try:
            summary = self._write_snapshot(step, epoch, metrics, weights_location, started, probe_ranks)
        except Exception as error:
            if not shared:      # the others still wait to hear where to write
                dist_utils.share_from_main(error)
            dist_utils.settle(error)
            raise
        dist_utils.settle()
        return summary

    def _probe_for_main(self, step: int) -> None:
        """A rank other than 0: probe this rank's shard into rank 0's staging folder if it sees it;
        otherwise into a temporary folder of its own, and send it to rank 0 when asked."""
        folder, token = dist_utils.share_from_main()          # raises rank 0's error, if it had one
        stage = CheckpointStage(Path(folder))
        if dist_utils.from_every_rank(shards.sees_stage(stage, token))[dist_utils.rank()]:
            dist_utils.gather_to_main(self._probe_shard(lambda: stage, step, durable=True))
        else:
            own: list[Path] = []

            def own_stage() -> CheckpointStage:
                own.append(Path(tempfile.mkdtemp(prefix=f"t3vis-rank-{dist_utils.rank()}-")))
                return CheckpointStage(own[0])

            try:
                result = self._probe_shard(own_stage, step, durable=False)
                dist_utils.gather_to_main(result)
                if dist_utils.asked() and isinstance(result, ProbeResult):   # asked only once every rank probed
                    shards.send(result)
            finally:
                for folder in own:
                    shutil.rmtree(folder, ignore_errors=True)
        dist_utils.settle()                           # raises rank 0's error (or this rank's, passed on)

    def _probe_shard(self, where: Callable[[], CheckpointStage], step: int, durable: bool) -> ProbeResult | Exception:
        """This rank's shard, probed into scratch files of where() (rank 0's staging folder, or a
        folder of this rank's own); an error is returned, for rank 0 to pass on to every rank.
        durable: sync the files (rank 0 may read them from another host, on a shared disk)."""
        rows = dist_utils.shard(len(self.texts))
        # every rank runs as many batches as the rank with the most (FSDP's passes are collectives)
        lockstep = dist_utils.max_over_ranks(-(-len(rows) // self.options["batch_size"]))
        try:
            stage, scratch = where(), f"rank-{dist_utils.rank()}"
            result = self._probe(rows, step, self._stage_sinks(stage, len(rows), scratch), lockstep,
                                 self._token_rows(stage, len(rows), scratch))
            if durable:
                for file in shards.files(result):
                    file.sync()
            return result
        except Exception as error:
            return error

    def _collect_shards(self, stage: CheckpointStage, parts: list[ProbeResult | Exception],
                        sees: list[bool]) -> ProbeResult:
        """The ranks' results as one, their per-example files put into the checkpoint's in rank
        order, one shard at a time, a chunk of rows at a time: copied from the staging folder for
        the ranks that see it (sees[rank]), or sent by the others when asked (each waits to be).
        After an error no rank is asked to send; the error is raised once every rank has its answer."""
        error = next((part for part in parts if isinstance(part, Exception)), None)
        final = self._stage_sinks(stage, len(self.texts)) if error is None else {}
        for peer, (part, rows) in enumerate(zip(parts, dist_utils.shards(len(self.texts)))):
            start = int(rows[0]) if len(rows) else 0
            if sees[peer]:
                if error is None and isinstance(part, ProbeResult):
                    try:
                        self._move_shard(part, final, start)
                    except Exception as e:  # raised once every rank has its answer
                        error = e
                continue
            dist_utils.ask(peer, error is None)
            if error is None and isinstance(part, ProbeResult):
                if isinstance(part.tokens, list):      # its token values come to a copy in the staging folder
                    part.tokens = [RaggedRows.receiving(stage.path / stage.scratch(f"rank-{peer}-{schema.TOKENS}"),
                                                        shard.offsets, shard.dtypes)
                                   for shard in part.tokens if shard.offsets is not None]
                error = shards.receive(peer, final, part, start, len(rows))
        if error is not None:
            raise error
        return _merge([part for part in parts if isinstance(part, ProbeResult)], final)

    def _move_shard(self, part: ProbeResult, final: dict[str, StackSinks], start: int) -> None:
        for name, record in part.stacks.items():
            shards.move_rows(record.hidden, final[name].hidden, start)
            shards.move_rows(record.gate_grads, final[name].gate_grads, start)

    def _token_rows(self, stage: CheckpointStage, n: int, scratch: str = "all") -> RaggedRows | None:
        """Where a generative task's per-token values go (files in the stage); None for other tasks."""
        if not self.task.format.token_outputs:
            return None
        return stage.token_rows(n, stage.scratch(f"{scratch}-{schema.TOKENS}"))

    def _stage_sinks(self, stage: CheckpointStage, n: int, scratch: str | None = None) -> dict[str, StackSinks]:
        """Each stack's per-example files in the staging folder: the checkpoint's own, or a rank's
        scratch copies of them (n rows each)."""
        def file(name: str, stack: str) -> str:
            final = self._file(name, stack)
            return final if scratch is None else stage.scratch(f"{scratch}-{final}")

        return {s.stack: StackSinks(
            None if s.hidden_output is None else stage.hidden_rows(s.num_layers + 1, n, s.hidden_size,
                                                                   file(schema.HIDDEN, s.stack)),
            stage.gate_grad_rows(n, s.num_layers, s.num_heads, file(schema.GATE_GRADS, s.stack)))
            for s in self.stacks}

    def _write_snapshot(self, step: int, epoch: float | None, metrics: dict | None, weights_location,
                        started: float, probe_into: Callable[[CheckpointStage, int], ProbeResult]) -> SnapshotSummary:
        """probe_into: fills the stage's per-example files and returns the rest of what was measured."""
        where = None if weights_location is None else str(weights_location)
        if where is not None:  # before the checkpoint appears, so the server never sees it unnamed
            self.writer.add_weights_root(where)
        with self.writer.checkpoint(step, epoch=epoch, metrics=metrics or {}, weights_location=where) as stage:
            result = probe_into(stage, step)
            stage.metrics.update(self.task.metrics(result.outputs, np.asarray(self.splits)),
                                 probe_seconds=time.perf_counter() - started)
            stage.write_outputs(self._output_columns(result), self.task.format.output_columns)
            for stack, record in result.stacks.items():
                stage.write_heads(_heads_arrays(record), self._file(schema.HEADS, stack))
            if isinstance(result.tokens, list):
                stage.write_token_files(result.tokens)
            elif result.tokens is not None:
                stage.write_tokens(result.tokens.arrays())
            if where is None and self._keeps_weights_of(step):
                saved = save_model_weights(self.model, self.tokenizer, stage.weights_dir,
                                           base_dir=self.run_dir / schema.BASE_MODEL_DIR)
                if saved.base_referenced and saved.base_folder is not None:   # before the checkpoint appears
                    self.writer.add_weights_root(saved.base_folder)
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

    def _file(self, name: str, stack: str) -> str:
        return schema.stack_file(name, stack, self.default_stack)

    def _probe(self, rows: np.ndarray, step: int, out: dict[str, StackSinks], lockstep: int = 0,
               tokens_out: RaggedRows | None = None) -> ProbeResult:
        bar = None
        if self.progress and dist_utils.rank() == 0:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(rows), desc=f"probe step {step}", unit="ex", leave=False)
        try:
            return probe_examples(self.model, self.tokenizer, self.examples.subset(rows), self.task,
                                  stacks=self.stacks, out=out, progress=bar.update if bar else None,
                                  lockstep=lockstep, filler=self.examples.subset([0]), tokens_out=tokens_out,
                                  **self.options)
        finally:
            if bar is not None:
                bar.close()

    def _output_columns(self, r: ProbeResult) -> dict[str, np.ndarray]:
        return {"id": self.ids, **{name: r.outputs[name] for name in self.task.format.output_columns[1:]}}

    def close(self) -> None:
        self.flush()
        if self.viewer is not None and not self.keep_serving:
            self.viewer.stop()
            self.viewer = None


def _serve_until_interrupted(viewer) -> None:
    """At the script's end (keep_serving=True): keep the viewer up until Ctrl+C."""
    print(f"t3vis: training is over; still serving at {viewer.url} (Ctrl+C stops)", flush=True)
    try:
        viewer.wait()
    except KeyboardInterrupt:
        viewer.stop()


def _merge(parts: list[ProbeResult], sinks: dict[str, StackSinks]) -> ProbeResult:
    """The ranks' results, in rank order (each rank probed a contiguous shard); their per-example
    arrays are already in sinks."""
    stacks = {}
    for name, first in parts[0].stacks.items():
        attention = AttentionStats(first.attention.num_layers, first.attention.num_heads,
                                   first.attention.thumbnail_size, cross=first.attention.cross)
        for p in parts:
            attention.merge(p.stacks[name].attention)
        importance_raw = np.sum([p.stacks[name].importance_raw for p in parts], axis=0)
        stacks[name] = StackRecord(sinks[name].hidden, sinks[name].gate_grads, attention, importance_raw)
    probed = [p for p in parts if p.outputs]          # a rank whose shard was empty has no outputs
    outputs = {k: np.concatenate([p.outputs[k] for p in probed]) for k in probed[0].outputs}
    tokens: TokenArrays | list[RaggedRows] | None = None
    # every rank's, even an empty shard's: each is removed once in
    in_files = [shard for p in parts if isinstance(p.tokens, list) for shard in p.tokens]
    in_memory = [p.tokens for p in probed if isinstance(p.tokens, TokenArrays)]
    if in_files:
        tokens = in_files
    elif in_memory:
        tokens = TokenArrays.concatenate(in_memory)
    return ProbeResult(stacks, outputs, tokens, parts[0].default_stack)


def _heads_arrays(r: StackRecord) -> dict[str, np.ndarray]:
    raw = r.importance_raw                                              # (L, H): sum of |gate gradient|
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    importance = np.divide(raw, norms, out=np.zeros_like(raw), where=norms > 0)
    return {"importance": importance.astype(np.float32), "importance_raw": raw.astype(np.float32),
            **r.attention.finish()}


def _version() -> str:
    from t3vis import __version__
    return __version__
