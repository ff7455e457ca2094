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
from t3vis.models.loading import load_classifier
from t3vis.models.structure import find_attention_layout
from t3vis.record.labels import ResolvedLabels, format_mapping, is_placeholder, resolve_labels
from t3vis.record.recorder import Recorder, SnapshotSummary
from t3vis.store import schema
from t3vis.store.reader import Run, open_run
from t3vis.store.writer import RunWriter

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
                       label_column: str = "label", id_column: str | None = None, split_column: str | None = None,
                       label_names: Sequence[str] | None = None, label_map: Mapping[str, int] | None = None,
                       exist_ok: bool = False, log: Callable[[str], None] = print,
                       **options) -> list[SnapshotSummary]:
    """Record each checkpoint folder (in step order) on the probe examples in `data`.

    label_names (index -> name) or label_map (name -> index) say which class a label name is; one is
    needed when the labels are names and the model's are placeholders (LABEL_0, ...).
    log receives what the user should know: rows left out, the label mapping used.
    """
    for folder in checkpoints:
        check_checkpoint_folder(folder)
    ordered = sorted(((folder, *checkpoint_position(folder)) for folder in checkpoints), key=lambda c: c[1])
    steps = [step for _, step, _ in ordered]
    if len(set(steps)) != len(steps):
        raise InvalidInputError(f"two checkpoints have the same step among {steps}")
    table = read_labelled_texts(data, text_column=text_column, label_column=label_column,
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
    summaries = []
    for index, (folder, step, epoch) in enumerate(ordered):
        if index > 0:
            model, tokenizer = load_classifier(folder)
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
    return resolve_labels(table.labels, id2label, classes, label_names=label_names, label_map=label_map)


def check_appendable(run: Run, model, table: LabelledTexts, resolved: ResolvedLabels) -> None:
    """Refuse to add checkpoints whose model or probe set differs from the run's, naming what differs."""
    layout = find_attention_layout(unwrap(model))
    differences = [f"{what}: the run has {had}, this recording {has}" for what, had, has in (
        ("layers", run.num_layers, layout.num_layers),
        ("heads", run.num_heads, layout.num_heads),
        ("hidden size", run.hidden_size, layout.hidden_size),
        ("label names", run.label_names, resolved.names),
    ) if had != has]
    differences += _probe_set_differences(run.probe_examples, table, resolved.ids)
    if differences:
        raise InvalidInputError(f"cannot add these checkpoints to {run.path}: " + "; ".join(differences)
                                + ". Record them into a new folder, or use the run's data and model")


def _probe_set_differences(probe: pd.DataFrame, table: LabelledTexts, labels: np.ndarray) -> list[str]:
    if len(probe) != len(table.texts):
        return [f"probe examples: the run has {len(probe)}, the data file {len(table.texts)}"]
    out = []
    for what, had, has in (("texts", probe["text"].tolist(), table.texts),
                           ("labels", probe["label"].to_numpy(np.int64).tolist(), labels.tolist())):
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
