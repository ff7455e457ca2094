"""Record checkpoints saved earlier (`t3vis record`): Hugging Face checkpoint folders."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from t3vis.data_files import LabelledTexts, read_labelled_texts
from t3vis.errors import InvalidInputError, NotFoundError
from t3vis.models.batches import num_labels, unwrap
from t3vis.models.loading import load_checkpoint_model, load_classifier
from t3vis.models.structure import find_stacks
from t3vis.record.recorder import Recorder, SnapshotSummary
from t3vis.store import schema
from t3vis.store.reader import Run, open_run
from t3vis.store.writer import RunWriter
from t3vis.tasks import get_task
from t3vis.tasks.base import Task
from t3vis.tasks.labels import ResolvedLabels, format_mapping, is_placeholder, resolve_labels

_CHECKPOINT_NAME = re.compile(r"checkpoint-\d+")


def checkpoint_position(folder: Path) -> tuple[int, float | None]:
    """(step, epoch) from trainer_state.json, else from a `checkpoint-1200` style name."""
    state = folder / "trainer_state.json"
    if state.is_file():
        data = json.loads(state.read_text())
        return int(data.get("global_step", 0)), data.get("epoch")
    match = re.search(r"(\d+)$", folder.name)
    if match is None:
        raise InvalidInputError(f"cannot tell the step of {folder}: it has no trainer_state.json and its name "
                                "does not end in a step number (name it like checkpoint-1200)")
    return int(match.group(1)), None


def check_checkpoint_folder(folder: Path) -> None:
    if not folder.exists():
        raise NotFoundError(f"checkpoint folder {folder} does not exist; check the path")
    if not folder.is_dir():
        raise InvalidInputError(f"{folder} is a file; give the checkpoint's folder (the one holding config.json)")
    if not (folder / "config.json").is_file():
        raise NotFoundError(f"{folder} is not a Hugging Face checkpoint (no config.json)")


def model_name(checkpoints: Sequence[Path]) -> str:
    """What the model is called: the name it was loaded from before fine-tuning, if its config.json
    kept it, else the folder the checkpoints were saved into (a Trainer's output_dir)."""
    first = checkpoints[0]
    try:
        saved = json.loads((first / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        saved = None
    if isinstance(saved, str) and saved.strip() and not _CHECKPOINT_NAME.fullmatch(Path(saved).name):
        return saved.strip()
    folder = first.resolve()
    return folder.parent.name if _CHECKPOINT_NAME.fullmatch(folder.name) and folder.parent.name else folder.name


def record_checkpoints(checkpoints: list[Path], data: Path, out: Path, *, text_column: str = "text",
                       label_column: str | None = None, id_column: str | None = None, split_column: str | None = None,
                       label_names: Sequence[str] | None = None, label_map: Mapping[str, int] | None = None,
                       task: str | None = None, target_column: str | None = None,
                       exist_ok: bool = False, log: Callable[[str], None] = print,
                       **options) -> list[SnapshotSummary]:
    """Record each checkpoint folder (in step order) on the probe examples in `data`.

    task: "classification" (default), "causal-lm" or "seq2seq". A classifier's labels come from
    label_column (default "label"); label_names (index -> name) or label_map (name -> index) say
    which class a label name is, one being needed when the labels are names and the model's are
    placeholders (LABEL_0, ...). A generative task's targets come from target_column (seq2seq:
    required; causal-lm: the completions of texts as prompts, or none to score whole texts), and
    its examples' categories (a topic, to colour and filter by) from label_column where the file
    has it.
    log receives what the user should know: rows left out, the label mapping used.
    """
    the_task = get_task(task)
    if not the_task.format.has_classes:
        return _record_generative(checkpoints, data, out, the_task, text_column=text_column,
                                  target_column=target_column, category_column=label_column, id_column=id_column,
                                  split_column=split_column,
                                  exist_ok=exist_ok, log=log, **options)
    if target_column is not None:
        raise InvalidInputError("--target-column is for generative tasks (--task causal-lm or seq2seq); a "
                                "classifier's labels come from --label-column")
    ordered = _ordered(checkpoints)
    table = read_labelled_texts(data, text_column=text_column, label_column=label_column or "label",
                                id_column=id_column, split_column=split_column)
    _log_table(table, log)

    model, tokenizer = load_classifier(ordered[0][0])
    existing = open_run(out) if exist_ok and (out / schema.RUN_META).exists() else None
    resolved = _resolve(table, model, label_names, label_map, existing)
    log(f"labels: {format_mapping(resolved.mapping)}")
    if existing is not None:
        check_appendable(existing, model, table, resolved)
    # the Recorder names the run's model after config._name_or_path; loading set it to the folder
    model.config._name_or_path = model_name([folder for folder, _, _ in ordered])
    recorder = Recorder(out, model, tokenizer, table.texts, resolved.ids, ids=table.ids,
                        splits=table.splits or "probe", label_names=resolved.names, save_weights=False,
                        progress=True, exist_ok=exist_ok, **options)
    if existing is None and table.source_ids is not None:
        _keep_source_ids(out, table.source_ids)
    return _snapshots(recorder, ordered, load_classifier)


def _record_generative(checkpoints: list[Path], data: Path, out: Path, task: Task, *, text_column: str,
                       target_column: str | None, category_column: str | None, id_column: str | None,
                       split_column: str | None, exist_ok: bool, log: Callable[[str], None],
                       **options) -> list[SnapshotSummary]:
    """record_checkpoints for a task without classes: texts (sources, prompts), target texts, and
    categories where the file has them."""
    ordered = _ordered(checkpoints)
    table = read_labelled_texts(data, text_column=text_column, label_column=target_column, id_column=id_column,
                                split_column=split_column, label_role="target", category_column=category_column,
                                read_categories=True)
    _log_table(table, log)
    if table.category_column is not None:
        log(f"categories: column {table.category_column!r} ({len(set(table.categories or []))} distinct)")

    def load(folder: Path):
        return load_checkpoint_model(folder, task.format.auto_model)

    model, tokenizer = load(ordered[0][0])
    if exist_ok and (out / schema.RUN_META).exists():
        check_appendable(open_run(out), model, table, None)
    model.config._name_or_path = model_name([folder for folder, _, _ in ordered])
    recorder = Recorder(out, model, tokenizer, table.texts, targets=table.labels, task=task, ids=table.ids,
                        categories=table.categories,
                        splits=table.splits or "probe", save_weights=False, progress=True, exist_ok=exist_ok,
                        **options)
    if recorder.truncated:
        log(f"{recorder.truncated} of {len(table.texts)} examples are longer than max_length and were truncated")
    return _snapshots(recorder, ordered, load)


def _ordered(checkpoints: list[Path]) -> list[tuple[Path, int, float | None]]:
    """(folder, step, epoch) in step order, after checking each folder."""
    for folder in checkpoints:
        check_checkpoint_folder(folder)
    ordered = sorted(((folder, *checkpoint_position(folder)) for folder in checkpoints), key=lambda c: c[1])
    steps = [step for _, step, _ in ordered]
    if len(set(steps)) != len(steps):
        raise InvalidInputError(f"two checkpoints have the same step among {steps}")
    return ordered


def _snapshots(recorder: Recorder, ordered, load) -> list[SnapshotSummary]:
    summaries = []
    for index, (folder, step, epoch) in enumerate(ordered):
        if index > 0:
            model, _ = load(folder)
            recorder.use_model(model)
        summaries.append(recorder.snapshot(step=step, epoch=epoch, weights_location=folder.resolve()))
    return summaries


def _log_table(table: LabelledTexts, log: Callable[[str], None]) -> None:
    dropped = table.dropped_message()
    if dropped:
        log(dropped)
    if table.id_column:
        kept = "as the run's ids" if table.ids is not None else "as source_id (the run numbers the rows)"
        log(f"ids: column {table.id_column!r}, kept {kept}")
    if table.split_column:
        log(f"splits: column {table.split_column!r}")


def _resolve(table: LabelledTexts, model, label_names: Sequence[str] | None, label_map: Mapping[str, int] | None,
             existing: Run | None) -> ResolvedLabels:
    inner = unwrap(model)
    id2label = getattr(inner.config, "id2label", None)
    classes = num_labels(inner)
    if existing is not None and label_names is None and label_map is None and is_placeholder(id2label, classes):
        label_names = existing.label_names   # appending: the mapping the run was recorded with
    return resolve_labels(table.labels or [], id2label, classes, label_names=label_names, label_map=label_map)


def check_appendable(run: Run, model, table: LabelledTexts, resolved: ResolvedLabels | None) -> None:
    """Refuse to add checkpoints whose model or probe set differs from the run's, naming what differs
    (resolved: the class labels of a classifier's table; None for a generative task's)."""
    stacks = find_stacks(unwrap(model))
    default = next(s for s in stacks if s.stack == run.default_stack) if run.default_stack in \
        [s.stack for s in stacks] else stacks[0]
    compared = [
        ("stacks", [s.name for s in run.stacks], [s.stack for s in stacks]),
        ("layers", run.num_layers, default.num_layers),
        ("heads", run.num_heads, default.num_heads),
        ("hidden size", run.hidden_size, default.hidden_size),
    ]
    if resolved is not None:
        compared.append(("label names", run.label_names, resolved.names))
    differences = [f"{what}: the run has {had}, this recording {has}" for what, had, has in compared if had != has]
    labels = resolved.ids if resolved is not None else None
    differences += _probe_set_differences(run.probe_examples, table, labels)
    if differences:
        raise InvalidInputError(f"cannot add these checkpoints to {run.path}: " + "; ".join(differences)
                                + ". Record them into a new folder, or use the run's data and model")


def _probe_set_differences(probe: pd.DataFrame, table: LabelledTexts, labels: np.ndarray | None) -> list[str]:
    if len(probe) != len(table.texts):
        return [f"probe examples: the run has {len(probe)}, the data file {len(table.texts)}"]
    out = []
    compared = [("texts", probe["text"].tolist(), table.texts)]
    if labels is not None:
        compared.append(("labels", probe["label"].to_numpy(np.int64).tolist(), labels.tolist()))
    elif "target" in probe.columns and table.labels is not None:
        compared.append(("targets", probe["target"].tolist(), table.labels))
    for what, had, has in compared:
        first = next((i for i, (a, b) in enumerate(zip(had, has)) if a != b), None)
        if first is not None:
            out.append(f"{what} differ from example {first} on ({had[first]!r} in the run, {has[first]!r} now)")
    return out


def _keep_source_ids(out: Path, source_ids: list[str]) -> None:
    """Keep the user's own ids (examples' source_id) in the run the Recorder just created, which
    has no parameter for extra columns yet. The write is atomic and precedes every checkpoint."""
    examples = open_run(out).examples
    examples["source_id"] = [source_ids[row] for row in examples["probe_row"]]  # a new run: all probed
    RunWriter(out).write_examples(examples)
