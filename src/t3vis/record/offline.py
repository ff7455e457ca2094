"""Record checkpoints saved earlier (`t3vis record`): Hugging Face checkpoint folders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from t3vis.data_files import read_labelled_texts
from t3vis.errors import InvalidInputError, NotFoundError
from t3vis.models.loading import load_classifier
from t3vis.record.recorder import Recorder, SnapshotSummary


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


def record_checkpoints(checkpoints: list[Path], data: Path, out: Path, *, text_column: str = "text",
                       label_column: str = "label", exist_ok: bool = False, **options) -> list[SnapshotSummary]:
    for folder in checkpoints:
        if not (folder / "config.json").is_file():
            raise NotFoundError(f"{folder} is not a Hugging Face checkpoint (no config.json)")
    ordered = sorted(((folder, *checkpoint_position(folder)) for folder in checkpoints), key=lambda c: c[1])
    steps = [step for _, step, _ in ordered]
    if len(set(steps)) != len(steps):
        raise InvalidInputError(f"two checkpoints have the same step among {steps}")

    model, tokenizer = load_classifier(ordered[0][0])
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    table = read_labelled_texts(data, text_column=text_column, label_column=label_column)
    labels = table.labels
    if table.label_names is not None and set(table.label_names) <= set(names):
        # labels given by name: number them as the model does
        labels = np.array([names.index(table.label_names[i]) for i in labels], dtype=np.int64)
    elif table.label_names is not None and len(table.label_names) == len(names):
        names = table.label_names   # the model's are placeholders (LABEL_0, ...): the data names them
    recorder = Recorder(out, model, tokenizer, table.texts, labels, ids=table.ids,
                        splits=table.splits or "probe", label_names=names, save_weights=False,
                        progress=True, exist_ok=exist_ok, **options)
    summaries = []
    for index, (folder, step, epoch) in enumerate(ordered):
        if index > 0:
            model, tokenizer = load_classifier(folder)
            recorder.use_model(model)
        summaries.append(recorder.snapshot(step=step, epoch=epoch, weights_location=folder.resolve()))
    return summaries
