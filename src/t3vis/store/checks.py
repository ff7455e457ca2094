"""Checks of a run's files where they are read: run.json and meta.json for their required
fields and types, Parquet files for their required columns and types, arrays for their shapes.
A file that fails, or that pyarrow or numpy cannot read, raises CorruptRunError naming the file
and what to do, so nothing past the reader sees a KeyError or a library's own exception."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from t3vis.errors import CorruptRunError
from t3vis.tasks.formats import CLASSIFICATION, TaskFormat

RERECORD = "re-record the run, or restore the file from a backup"
# run.json keys every reader needs, with their type check; other keys are checked when present
RUN_REQUIRED: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "format_version": ("an integer", lambda v: is_int(v)),
    "label_names": ("a list of class names", lambda v: isinstance(v, list)
                    and all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in v)),
    "num_layers": ("a positive integer", lambda v: is_int(v) and v > 0),
    "num_heads": ("a positive integer", lambda v: is_int(v) and v > 0),
    "hidden_size": ("a positive integer", lambda v: is_int(v) and v > 0),
}
RUN_OPTIONAL: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "num_probe": ("a non-negative integer", lambda v: is_int(v) and v >= 0),
    "max_length": ("a positive integer", lambda v: is_int(v) and v > 0),
    "model": ("an object", lambda v: isinstance(v, dict)),
    "pooling": ("a string", lambda v: isinstance(v, str)),
    "weights_roots": ("a list of folder paths", lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v)),
    "task": ("a task name", lambda v: isinstance(v, str)),
    "stacks": ("a list of {name, num_layers, num_heads, hidden_size, hidden}", lambda v: isinstance(v, list)
               and len(v) > 0 and all(_is_stack(s) for s in v)),
    "default_stack": ("a stack name", lambda v: isinstance(v, str)),
    "truncated": ("a non-negative integer", lambda v: is_int(v) and v >= 0),
}


def _is_stack(s) -> bool:
    return (isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("hidden"), bool)
            and all(is_int(s.get(k)) and s[k] > 0 for k in ("num_layers", "num_heads", "hidden_size")))
CHECKPOINT_REQUIRED: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "step": ("a non-negative integer", lambda v: is_int(v) and v >= 0),
}
CHECKPOINT_OPTIONAL: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "epoch": ("a number or null", lambda v: v is None or is_number(v)),
    "metrics": ("an object or null", lambda v: v is None or isinstance(v, dict)),
    "weights": ("a path or null", lambda v: v is None or isinstance(v, str)),
    "time": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "gate_grad_scale": ("a positive number", lambda v: is_number(v) and math.isfinite(v) and v > 0),
}

# required Parquet columns, each with the kind of Arrow type it must have
_INTEGER = ("an integer", pa.types.is_integer)
_FLOAT = ("a float", pa.types.is_floating)
_BOOL = ("a boolean", pa.types.is_boolean)
_STRING = ("a string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t))
_PROBS = ("a fixed-size list of floats",
          lambda t: pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type))
_COLUMN_TYPES = {"id": _INTEGER, "split": _STRING, "text": _STRING, "label": _INTEGER, "probe_row": _INTEGER,
                 "target": _STRING, "pred": _INTEGER, "loss": _FLOAT, "gold_prob": _FLOAT, "correct": _BOOL,
                 "probs": _PROBS, "perplexity": _FLOAT, "mean_prob": _FLOAT, "token_accuracy": _FLOAT,
                 "n_tokens": _INTEGER}
EXAMPLE_TYPES = {c: _COLUMN_TYPES[c] for c in CLASSIFICATION.example_columns}
OUTPUT_TYPES = {c: _COLUMN_TYPES[c] for c in CLASSIFICATION.output_columns if c != "nan"}
DYNAMICS_TYPES = {"id": _INTEGER, "epoch": _INTEGER, "step": _INTEGER, "gold_prob": _FLOAT, "correct": _BOOL}


def example_types(task: TaskFormat) -> dict:
    return {c: _COLUMN_TYPES[c] for c in task.example_columns}


def output_types(task: TaskFormat) -> dict:
    """The required output columns (nan is optional: runs written before it lack it)."""
    return {c: _COLUMN_TYPES[c] for c in task.output_columns if c != "nan"}


def dynamics_types(task: TaskFormat) -> dict:
    """A generative task's `correct` is a token accuracy, a float."""
    return {**DYNAMICS_TYPES, "correct": _FLOAT} if task.correct_is_fraction else DYNAMICS_TYPES


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)



def read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise CorruptRunError(f"{what} is missing: {path} ({RERECORD})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptRunError(f"{what} is not valid JSON ({e}): {path} ({RERECORD})") from None
    except OSError as e:
        raise CorruptRunError(f"{what} is unreadable ({e}): {path} ({RERECORD})") from None
    if not isinstance(value, dict):
        raise CorruptRunError(f"{what} is not a JSON object (it holds a {type(value).__name__}): {path} "
                              f"({RERECORD})")
    return value


def check_fields(meta: dict, required: dict, optional: dict, path: Path, what: str) -> None:
    for key, (kind, _) in required.items():
        if key not in meta:
            raise CorruptRunError(f"{what} lacks the field {key!r} ({kind}): {path} ({RERECORD})")
    for key, (kind, ok) in {**required, **optional}.items():
        if key in meta and not ok(meta[key]):
            raise CorruptRunError(f"{what} has {key!r} = {meta[key]!r}, which is not {kind}: {path} ({RERECORD})")



def check_shape(array: np.ndarray, expected: tuple, meaning: str, path: Path, what: str,
                kind: type = np.floating) -> None:
    """array's shape against expected (None: any size there), and its dtype kind (floats unless
    kind says np.integer)."""
    fits = array.ndim == len(expected) and all(e is None or s == e for s, e in zip(array.shape, expected))
    if not fits or not np.issubdtype(array.dtype, kind):
        want = "(" + ", ".join("any" if e is None else str(e) for e in expected) + ")"
        kind_name = "integers" if kind is np.integer else "floats"
        raise CorruptRunError(f"{what} have shape {array.shape} and dtype {array.dtype}; run.json says "
                              f"{meaning} = {want} of {kind_name}: {path} ({RERECORD})")


@contextmanager
def reading(path: Path, what: str, be: str = "is") -> Iterator[None]:
    """Translate whatever a library raises while reading path into a CorruptRunError naming it
    (be: "is" or "are", to agree with what)."""
    try:
        yield
    except FileNotFoundError:
        raise CorruptRunError(f"{what} {be} missing: {path} ({RERECORD})") from None
    except Exception as e:      # numpy and pyarrow raise ValueError, OSError, EOFError, ... for a damaged file
        raise CorruptRunError(f"{what} {be} unreadable ({type(e).__name__}: {e}): {path} ({RERECORD})") from None


def load_npy(path: Path, what: str) -> np.ndarray:
    with reading(path, what, be="are"):
        return np.load(path, mmap_mode="r")


def check_parquet(path: Path, what: str, columns: dict) -> Path:
    """path, after checking that the Parquet file's footer reads and names every required
    column with the right kind of type."""
    with reading(path, what):
        found = pq.read_schema(path)
    check_columns(found, path, what, columns)
    return path


def check_columns(found: pa.Schema, path: Path, what: str, columns: dict) -> None:
    names = set(found.names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise CorruptRunError(f"{what} lacks the column(s) {missing} (it has {found.names}): {path} ({RERECORD})")
    for name, (kind, ok) in columns.items():
        if not ok(found.field(name).type):
            raise CorruptRunError(f"{what} has column {name!r} of type {found.field(name).type}, not {kind}: "
                                  f"{path} ({RERECORD})")


def read_parquet_table(path: Path, what: str, columns: dict) -> pa.Table:
    with reading(path, what):
        table = pq.read_table(path)
    check_columns(table.schema, path, what, columns)
    return table


def read_parquet(path: Path, what: str, columns: dict) -> pd.DataFrame:
    return read_parquet_table(path, what, columns).to_pandas()

