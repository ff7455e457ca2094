"""Read a labelled text dataset from CSV, JSON Lines or Parquet for `t3vis record`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from t3vis.errors import InvalidInputError, NotFoundError

_READERS = {
    ".csv": lambda p: pd.read_csv(p),
    ".tsv": lambda p: pd.read_csv(p, sep="\t"),
    ".jsonl": lambda p: pd.read_json(p, lines=True),
    ".json": lambda p: pd.read_json(p, lines=True),
    ".parquet": lambda p: pd.read_parquet(p),
}


@dataclass(frozen=True)
class LabelledTexts:
    texts: list[str]
    labels: np.ndarray          # class indices
    label_names: list[str] | None  # set when the file held label names rather than indices
    ids: np.ndarray | None
    splits: list[str] | None


def read_labelled_texts(path: str | Path, *, text_column: str = "text", label_column: str = "label",
                        id_column: str | None = "id", split_column: str | None = "split",
                        label_names: list[str] | None = None) -> LabelledTexts:
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"no data file at {path}")
    # pandas decompresses by extension, so "data.csv.gz" reads as a CSV
    compressed = len(path.suffixes) > 1 and path.suffix in (".bz2", ".gz", ".zst", ".xz")
    kind = path.suffixes[-2] if compressed else path.suffix
    reader = _READERS.get(kind.lower())
    if reader is None:
        raise InvalidInputError(f"{path.name}: unknown file type; use .csv, .tsv, .jsonl or .parquet")
    try:
        frame = reader(path)
    except Exception as e:  # the readers raise many types for a malformed file
        raise InvalidInputError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    for role, column in (("text", text_column), ("label", label_column)):
        if column not in frame.columns:
            raise InvalidInputError(f"{path.name} has no {role} column {column!r}; its columns are "
                                    f"{list(frame.columns)} (choose with --{role}-column)")
    frame = frame.dropna(subset=[text_column, label_column])
    if frame.empty:
        raise InvalidInputError(f"{path.name} has no rows with both {text_column!r} and {label_column!r}")
    labels, names = _label_indices(frame[label_column], label_names, path.name)
    ids = frame[id_column].to_numpy(np.int64) if id_column and id_column in frame.columns else None
    splits = frame[split_column].astype(str).tolist() if split_column and split_column in frame.columns else None
    return LabelledTexts(frame[text_column].astype(str).tolist(), labels, names, ids, splits)


def _label_indices(column: pd.Series, label_names: list[str] | None, where: str):
    if pd.api.types.is_integer_dtype(column) or pd.api.types.is_bool_dtype(column):
        return column.to_numpy(np.int64), label_names
    if pd.api.types.is_float_dtype(column):
        if not np.all(np.mod(column.to_numpy(), 1) == 0):
            raise InvalidInputError(f"{where}: labels must be class indices or names, found fractional values")
        return column.to_numpy(np.int64), label_names
    names = label_names or sorted(column.astype(str).unique())
    lookup = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(column.astype(str)) - set(lookup))
    if unknown:
        raise InvalidInputError(f"{where}: label(s) {unknown[:5]} are not among the model's labels {names}")
    return column.astype(str).map(lookup).to_numpy(np.int64), list(names)
