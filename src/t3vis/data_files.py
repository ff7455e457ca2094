"""Read a labelled text dataset from CSV, TSV, JSON (array or Lines) or Parquet for `t3vis record`.

Labels come back as the file holds them (class indices or names); `t3vis.tasks.labels` says
which class each one is, since that needs the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from t3vis.errors import InvalidInputError, NotFoundError


def _read_json(path: Path) -> pd.DataFrame:
    """A JSON array of objects, or JSON Lines: a ".json" file may hold either."""
    try:
        return pd.read_json(path)
    except ValueError:   # JSON Lines is not one JSON value ("Trailing data"); try it as lines
        return pd.read_json(path, lines=True)


_READERS = {
    ".csv": lambda p: pd.read_csv(p),
    ".tsv": lambda p: pd.read_csv(p, sep="\t"),
    ".jsonl": lambda p: pd.read_json(p, lines=True),
    ".json": _read_json,
    ".parquet": lambda p: pd.read_parquet(p),
}

DEFAULT_ID_COLUMN = "id"
DEFAULT_SPLIT_COLUMN = "split"
DEFAULT_CATEGORY_COLUMN = "label"      # a generative task's examples' category, where the file has one


@dataclass(frozen=True)
class LabelledTexts:
    texts: list[str]
    labels: list | None          # as the file holds them: class indices or names (see tasks/labels.py),
                                 # or target texts; None where the task needs none (whole texts)
    ids: np.ndarray | None       # the file's integer ids, if it has an id column of unique integers
    source_ids: list[str] | None  # the file's ids when they are not integers (the run numbers rows instead)
    splits: list[str] | None
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows left out
    total_rows: int = 0
    id_column: str | None = None      # the columns actually used, to tell the user
    split_column: str | None = None
    categories: list[str] | None = None    # a generative task's example categories (a topic), if read
    category_column: str | None = None

    def dropped_message(self) -> str | None:
        """One line saying how many rows were left out and why, or None if none were."""
        if not self.dropped:
            return None
        reasons = ", ".join(f"{count} {reason}" for reason, count in self.dropped.items())
        return f"left out {sum(self.dropped.values())} of {self.total_rows} rows: {reasons}"


def read_labelled_texts(path: str | Path, *, text_column: str = "text", label_column: str | None = "label",
                        id_column: str | None = None, split_column: str | None = None,
                        label_role: str = "label", category_column: str | None = None,
                        read_categories: bool = False) -> LabelledTexts:
    """id_column / split_column: None uses a column named "id" / "split" if the file has one; a
    name given must be a column of the file. label_column None: texts only (a causal LM's whole
    texts); label_role "target": the column holds target texts, and a blank one is missing.
    read_categories (generative tasks): also read each example's category from category_column
    (None: a "label" column, if the file has one); a blank category is "unknown"."""
    path = Path(path)
    frame = _read_frame(path)
    _require_column(frame, text_column, "text", path)
    if label_column is not None:
        _require_column(frame, label_column, label_role, path)
    id_column = _optional_column(frame, id_column, DEFAULT_ID_COLUMN, "id", path)
    split_column = _optional_column(frame, split_column, DEFAULT_SPLIT_COLUMN, "split", path)
    if read_categories:
        category_column = _optional_column(frame, category_column, DEFAULT_CATEGORY_COLUMN, "category", path)
    total = len(frame)
    frame, dropped = _drop_unusable_rows(frame, text_column, label_column, label_role)
    if frame.empty:
        reasons = ", ".join(f"{n} {why}" for why, n in dropped.items()) or "the file has no rows"
        wanted = f"a text ({text_column!r})" if label_column is None else \
            f"both a text ({text_column!r}) and a {label_role} ({label_column!r})"
        raise InvalidInputError(f"{path.name} has no rows with {wanted}: {reasons}")
    ids, source_ids = _read_ids(frame, id_column, path) if id_column else (None, None)
    splits = frame[split_column].astype(str).tolist() if split_column else None
    labels = None if label_column is None else frame[label_column].tolist()
    if labels is not None and label_role == "target":
        labels = [str(v) for v in labels]
    categories = None
    if read_categories and category_column is not None:
        values = frame[category_column]
        categories = values.astype(str).str.strip().where(~_blank(values), "unknown").tolist()
    return LabelledTexts(frame[text_column].astype(str).tolist(), labels, ids, source_ids, splits, dropped, total,
                         id_column, split_column, categories, category_column if categories is not None else None)


def _read_frame(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise NotFoundError(f"no data file at {path}")
    # pandas decompresses by extension, so "data.csv.gz" reads as a CSV
    compressed = len(path.suffixes) > 1 and path.suffix in (".bz2", ".gz", ".zst", ".xz")
    kind = path.suffixes[-2] if compressed else path.suffix
    reader = _READERS.get(kind.lower())
    if reader is None:
        raise InvalidInputError(f"{path.name}: unknown file type; use .csv, .tsv, .json, .jsonl or .parquet")
    try:
        return reader(path)
    except Exception as e:  # the readers raise many types for a malformed file
        raise InvalidInputError(f"cannot read {path}: {type(e).__name__}: {e}") from None


def _require_column(frame: pd.DataFrame, column: str, role: str, path: Path) -> None:
    if column not in frame.columns:
        raise InvalidInputError(f"{path.name} has no {role} column {column!r}; its columns are "
                                f"{list(frame.columns)} (choose with --{role}-column)")


def _optional_column(frame: pd.DataFrame, column: str | None, default: str, role: str, path: Path) -> str | None:
    if column is None:
        return default if default in frame.columns else None
    _require_column(frame, column, role, path)
    return column


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | values.astype(str).str.strip().eq("")


def _drop_unusable_rows(frame: pd.DataFrame, text_column: str, label_column: str | None, label_role: str):
    """Rows without a text (missing, empty or blank) or without a label (a blank target); how many of each."""
    no_text = _blank(frame[text_column])
    if label_column is None:
        no_label = pd.Series(False, index=frame.index)
    else:
        labels = frame[label_column]
        no_label = (_blank(labels) if label_role == "target" else labels.isna()) & ~no_text
    missing = "with an empty or missing target" if label_role == "target" else "with a missing label"
    dropped = {reason: int(mask.sum()) for reason, mask in
               (("with an empty or missing text", no_text), (missing, no_label)) if mask.any()}
    return frame[~(no_text | no_label)].reset_index(drop=True), dropped


def _read_ids(frame: pd.DataFrame, column: str, path: Path) -> tuple[np.ndarray | None, list[str] | None]:
    """Integer ids stay the run's ids; any other ids are kept as the user's (source ids)."""
    values = frame[column]
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise InvalidInputError(f"{path.name}: {int(values.isna().sum())} row(s) have no {column!r} (the first is "
                                f"data row {row}); give every row an id, or choose another column with --id-column")
    if values.duplicated().any():
        repeated = values[values.duplicated()].astype(str).unique().tolist()
        raise InvalidInputError(f"{path.name}: the id column {column!r} repeats {repeated[:5]}; ids must be unique "
                                "(choose another column with --id-column)")
    if pd.api.types.is_integer_dtype(values):
        return values.to_numpy(np.int64), None
    return None, values.astype(str).tolist()
