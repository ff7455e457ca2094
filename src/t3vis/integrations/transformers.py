"""`T3VisCallback` for the Hugging Face Trainer: observe, never steer.

Snapshots at step 0, then at every evaluation or epoch end; training dynamics from the
training forward passes the Trainer already makes (a forward hook reads their logits).
Each observation's epoch is floor(state.epoch) at the start of its step and its step the
global step it is part of, from the Trainer's own state, so a run resumed with
`resume_from_checkpoint` (same run folder) continues the epochs instead of starting over.
Training rows are recognised by their tokens and label (integrations/fingerprint.py); a
generative task's rows by their tokens and token labels, or by their tokens alone where the
dataset has no labels and the collator makes them (DataCollatorForLanguageModeling).

For a generative task (task="causal-lm" or "seq2seq") the forward hook reads the batch's token
labels (-100 where no loss), so any Trainer subclass that calls the model with `labels` feeds
the data map. TRL's SFTTrainer does, but its fused LM head returns per-token log-probabilities
of the labels (`log_probs`, `is_top1`, `label_mask`) instead of logits; the hook reads those, the
same mean target-token probability and token accuracy. A training row is linked to a probe
example when its tokens and token labels are those the task encodes for it (TRL's
prompt-completion rows are); rows encoded otherwise (another template, no end-of-sequence token,
the end-of-sequence token masked as padding) are still observed, under ids of their own.

A PEFT (LoRA) model's snapshots keep their own copy of the adapter (a few MB) under keep_weights
instead of referencing the Trainer's checkpoint folder: that folder holds the adapter without
the reference to its base model a run's adapter folder has (record/model_weights.py), so it
would not load back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from t3vis.errors import InvalidInputError
from t3vis.integrations.fingerprint import FingerprintTable, fingerprints
from t3vis.models.batches import unwrap
from t3vis.record import distributed as dist_utils
from t3vis.record.recorder import Recorder
from t3vis.tasks import get_task
from t3vis.tasks.base import Task
from t3vis.tasks.generative import at_least_float32

_WHEN = ("evaluate", "epoch", "both")


class T3VisCallback(TrainerCallback):
    """Record a Trainer run into `run_dir`, probing `texts` with their `targets`: class labels for
    classification, completions (causal-lm, or None to score whole texts) or target texts (seq2seq).

    snapshot_on: "evaluate" (default), "epoch" or "both". Other keyword arguments go to
    `t3vis.Recorder` (ids, splits, label_names, pooling, batch_size, max_length, keep_weights, ...);
    serve=True starts the viewer at the start of training (serve_port, keep_serving: see Recorder).
    A snapshot at a step where the Trainer saves checkpoint-<step> references that folder and
    copies nothing; keep_weights applies to the snapshots it does not save (step 0, or steps
    between saves), and to every snapshot of a PEFT model (see the module docstring).

    Every training row gets an id of its own: the probe id of the probe example with the same
    tokens and label (the first such row), else probe ids' max + 1 + its row index. Rows with
    the same tokens and label are indistinguishable in a batch; they take their ids in turn, so
    each is counted once per epoch. (A run resumed mid-epoch restarts the turns: there, one
    such copy may be counted twice in that epoch and another not at all.)
    """

    def __init__(self, run_dir: str | Path, tokenizer, texts: Sequence[str], targets: Sequence | None = None, *,
                 task: str | Task | None = None, labels: Sequence | None = None, snapshot_on: str = "evaluate",
                 record_dynamics: bool = True, **recorder_options):
        if snapshot_on not in _WHEN:
            raise InvalidInputError(f"snapshot_on={snapshot_on!r}; choose one of {_WHEN}")
        if labels is not None and targets is not None:
            raise InvalidInputError("give targets or labels (its older name), not both")
        self.run_dir, self.tokenizer = Path(run_dir), tokenizer
        self.texts = list(texts)
        given = targets if targets is not None else labels
        self.targets = None if given is None else list(given)
        self.task = get_task(task)
        self.snapshot_on, self.record_dynamics = snapshot_on, record_dynamics
        self.recorder_options = recorder_options
        self.recorder: Recorder | None = None
        self._table: FingerprintTable | None = None
        self._labels_in_key = True    # whether the training rows' labels are part of their fingerprints
        self._hook = None
        self._state = None            # the Trainer's TrainerState: epoch and step of each observation
        self._last_step: int | None = None

    # -- Trainer events ----------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        self._state = state   # on resume, the state loaded from the checkpoint: the epochs continue
        if self.recorder is None:
            self.recorder = Recorder(self.run_dir, model, self.tokenizer, self.texts, self.targets, task=self.task,
                                     exist_ok=state.global_step > 0, **self.recorder_options)
        if self.record_dynamics and train_dataloader is not None:
            self._table = self._register_training_examples(self.recorder, train_dataloader.dataset)
            self._hook = model.register_forward_hook(self._observe, with_kwargs=True)
        if state.global_step == 0:
            self._snapshot(args, state, control)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.snapshot_on in ("evaluate", "both"):
            self._snapshot(args, state, control, metrics)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.snapshot_on in ("epoch", "both"):
            self._snapshot(args, state, control)

    def on_train_end(self, args, state, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.recorder is not None:
            self.recorder.close()

    # -- work handed to the recorder ---------------------------------------------------

    def _snapshot(self, args, state, control, metrics: dict | None = None) -> None:
        if self.recorder is None or self._last_step == state.global_step:
            return  # "both" at an epoch end that is also an evaluation: one snapshot
        self._last_step = state.global_step
        numbers = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        where = None if _saves_adapter_only(self.recorder.model) else self._trainer_checkpoint(args, state, control)
        self.recorder.snapshot(step=state.global_step, epoch=state.epoch, metrics=numbers, weights_location=where)

    @staticmethod
    def _trainer_checkpoint(args, state, control) -> str | None:
        """The folder the Trainer saves this step's checkpoint in, when it does: meta.json references
        it instead of a copy. The Trainer evaluates (and ends the epoch) before it saves, so at a
        snapshot the folder may not exist yet; control.should_save says it is about to. (With
        save_strategy="best" the Trainer decides after on_evaluate: should_save is still False
        there, so the weights are copied.) If save_total_limit later deletes the folder, that
        checkpoint simply has no weights to load."""
        if control.should_save and state.global_step > 0:
            return str(Path(args.output_dir).resolve() / f"checkpoint-{state.global_step}")
        return None

    def _observe(self, module, args, kwargs, output) -> None:
        recorder, table = self.recorder, self._table
        if not module.training or recorder is None or table is None:
            return
        input_ids, labels = kwargs.get("input_ids"), kwargs.get("labels")
        # a class per row, or token labels per row: anything else is no batch this task can score
        if input_ids is None or labels is None or labels.dim() != (1 if self.task.format.has_classes else 2):
            return
        keys = fingerprints(input_ids, kwargs.get("attention_mask"), labels if self._labels_in_key else None)
        ids = table.lookup(keys)
        logits = getattr(output, "logits", None)
        if logits is not None:
            recorder.observe(ids, logits, labels, **self._progress())
            return
        scores = _fused_scores(output)
        if scores is not None:
            recorder.observe_scores(ids, *scores, **self._progress())

    def _progress(self) -> dict:
        """This forward pass's epoch and step: state.epoch is the progress at the start of the step
        (the Trainer advances it after the optimizer step), so floor(state.epoch) is the epoch the
        batch belongs to (see Recorder.observe); the step is the global step the batch is part of."""
        state = self._state
        if state is None:
            return {}
        return {"epoch": float(state.epoch or 0.0), "step": int(state.global_step) + 1}

    def _register_training_examples(self, rec: Recorder, dataset) -> FingerprintTable:
        """Give every training row its own id: the probe id when its tokens and labels equal a probe
        example's as the task encodes it (the first such row only), else a fresh id after the probe
        ids, by row. Register its decoded text (and label or target) with the run. Rows without
        labels (the collator makes them from the tokens) are told apart by their tokens alone."""
        self._labels_in_key = len(dataset) == 0 or _row_labels(dataset[0]) is not None
        probe_keys = _fingerprint_probes(rec, self._labels_in_key)
        probe_ids = dict(zip(probe_keys.tolist(), rec.ids.tolist()))
        next_id = int(rec.ids.max()) + 1
        keys, ids, new_ids, new_rows = [], [], [], []
        for row in range(len(dataset)):
            item = dataset[row]
            tokens = torch.as_tensor(item["input_ids"]).view(1, -1)
            mask = torch.as_tensor(item["attention_mask"]).view(1, -1) if "attention_mask" in item else None
            label = _row_labels(item)
            label_t = None if label is None else torch.as_tensor(label)
            # the labels of one row as the batch holds them: (1,) a class, or (1, T') token labels
            batched = None if label_t is None or not self._labels_in_key else \
                label_t.view(1) if self.task.format.has_classes else label_t.view(1, -1)
            key = int(fingerprints(tokens, mask, batched)[0])
            example_id = probe_ids.pop(key, None)   # a duplicate of this row gets an id of its own
            if example_id is None:
                example_id = next_id + row
                if label_t is not None:
                    real = torch.ones_like(tokens[0], dtype=torch.bool) if mask is None else mask[0].bool()
                    new_ids.append(example_id)
                    new_rows.append(self.task.training_row(self.tokenizer, tokens[0], real, label_t))
            keys.append(key)
            ids.append(example_id)
        if new_ids:
            rec.register_examples(new_ids, new_rows, split="train")
        device = next(rec.model.parameters()).device
        return FingerprintTable(torch.tensor(keys, dtype=torch.int64), torch.tensor(ids, dtype=torch.int64),
                                start=dist_utils.rank()).to(device)


def _row_labels(item):
    return item.get("labels", item.get("label"))


def _fingerprint_probes(rec: Recorder, with_labels: bool) -> np.ndarray:
    """The probe examples' fingerprints, from the inputs (and labels) the task encodes for them."""
    keys = []
    for start in range(0, len(rec.examples), 256):
        rows = np.arange(start, min(start + 256, len(rec.examples)))
        batch = rec.task.encode(unwrap(rec.model), rec.tokenizer, rec.examples, rows,
                                max_length=rec.options["max_length"], device=torch.device("cpu"))
        keys.append(fingerprints(batch.inputs["input_ids"], batch.inputs.get("attention_mask"),
                                 batch.labels if with_labels else None).numpy())
    return np.concatenate(keys) if keys else np.array([], np.int64)


def _fused_scores(output) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean target-token probability, token accuracy) per row from a fused LM head's output (TRL's
    SFTTrainer: the log-probability of each next-token label, whether it was the top-1 token, and
    which labels carry the loss, all (B, T - 1)); None for an output without them."""
    log_probs, top1, scored = (getattr(output, name, None) for name in ("log_probs", "is_top1", "label_mask"))
    if log_probs is None or top1 is None or scored is None:
        return None
    with torch.no_grad():
        scored = scored.bool()
        counts = scored.sum(1)
        confidence = (at_least_float32(log_probs.detach()).exp() * scored).sum(1) / counts  # NaN: no target
        accuracy = (top1.bool() & scored).sum(1) / counts
    return confidence, accuracy


def _saves_adapter_only(model) -> bool:
    """Whether the model is a PEFT model, whose saved checkpoints hold its adapter alone."""
    try:
        from peft import PeftModel
    except ImportError:             # without peft installed no model is a PeftModel
        return False
    return isinstance(unwrap(model), PeftModel)
