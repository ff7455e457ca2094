"""What a probe set's labels mean: class indices, or names matched to the model's classes.

One pure function, `resolve_labels`, holds the rules, so that `t3vis record` and the Recorder agree:

- integer labels (or numeric strings such as "2") are class indices, checked against num_labels;
- names are matched to the model's id2label ignoring case and surrounding whitespace;
- a model with placeholder names (LABEL_0, LABEL_1, ... or no id2label) says nothing about which
  name is which index, so names need an explicit mapping (label_names or label_map); without one
  the error shows the mapping it would need, rather than guessing an order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from t3vis.errors import InvalidInputError

_PLACEHOLDER = re.compile(r"LABEL_(\d+)")
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class ResolvedLabels:
    ids: np.ndarray           # int64 class index per example
    names: list[str]          # class names in index order, one per class
    mapping: dict[str, int]   # name -> index, every class


def resolve_labels(raw_labels: Sequence | np.ndarray, id2label: Mapping | None, num_labels: int, *,
                   label_names: Sequence[str] | None = None,
                   label_map: Mapping[str, int] | None = None) -> ResolvedLabels:
    """Class indices for raw_labels (indices or names) on a model with num_labels classes.

    label_names: index -> name (one per class); label_map: name -> index. Give at most one; either
    is needed when the labels are names and the model's own names are placeholders.
    """
    if label_names is not None and label_map is not None:
        raise InvalidInputError("give label_names (index -> name) or a label map (name -> index), not both")
    names = _class_names(id2label, num_labels, label_names, label_map)
    values = _as_list(raw_labels)
    indices = _as_indices(values)
    if indices is not None:
        _check_range(indices, num_labels)
        return ResolvedLabels(indices, names, _mapping(names))
    explicit = label_names is not None or label_map is not None
    if not explicit and is_placeholder(id2label, num_labels) and not _all_known(values, names):
        raise InvalidInputError(_needs_mapping_message(values, num_labels))
    return ResolvedLabels(_match_names(values, names, explicit), names, _mapping(names))


def parse_label_map(text: str) -> dict[str, int]:
    """`sport=0,politics=1` (the --label-map flag's inline form) as {name: index}."""
    mapping: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, index = part.rpartition("=")
        if not sep or not name.strip() or not _INTEGER.fullmatch(index.strip()):
            raise InvalidInputError(f"cannot read {part!r} in the label map {text!r}: write name=index pairs "
                                    "separated by commas, e.g. sport=0,politics=1,technology=2")
        mapping[name.strip()] = int(index)
    if not mapping:
        raise InvalidInputError("the label map is empty: write name=index pairs, e.g. sport=0,politics=1")
    return mapping


def is_placeholder(id2label: Mapping | None, num_labels: int) -> bool:
    """True when the model's names say nothing: missing, or LABEL_<i> for every class i."""
    if not id2label:
        return True
    return all(_PLACEHOLDER.fullmatch(str(_name_of(id2label, i)).strip()) for i in range(num_labels))


def format_mapping(mapping: Mapping[str, int]) -> str:
    """The mapping as the --label-map flag writes it."""
    return ",".join(f"{name}={index}" for name, index in sorted(mapping.items(), key=lambda kv: kv[1]))


# -- class names ---------------------------------------------------------------------------

def _class_names(id2label: Mapping | None, num_labels: int, label_names: Sequence[str] | None,
                 label_map: Mapping[str, int] | None) -> list[str]:
    if label_names is not None:
        names = [str(n).strip() for n in label_names]
        if len(names) != num_labels:
            raise InvalidInputError(f"{len(names)} label names {names} for a model with {num_labels} classes: "
                                    "give one name per class, in index order")
    elif label_map is not None:
        names = _names_from_map(label_map, id2label, num_labels)
    else:
        names = [str(_name_of(id2label or {}, i)) for i in range(num_labels)]
    _check_distinct(names)
    return names


def _names_from_map(label_map: Mapping[str, int], id2label: Mapping | None, num_labels: int) -> list[str]:
    """Index order; a class the map leaves out keeps the model's name."""
    names = [str(_name_of(id2label or {}, i)) for i in range(num_labels)]
    taken: dict[int, str] = {}
    for name, index in label_map.items():
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < num_labels:
            raise InvalidInputError(f"the label map gives {name!r} the index {index!r}; the model's classes "
                                    f"are 0..{num_labels - 1}")
        if int(index) in taken:
            raise InvalidInputError(f"the label map gives {taken[int(index)]!r} and {name!r} the same index "
                                    f"{index}: give each class one name")
        taken[int(index)] = str(name).strip()
        names[int(index)] = str(name).strip()
    return names


def _name_of(id2label: Mapping, index: int):
    """id2label keys are ints in a live config and may be strings in one read from JSON."""
    return id2label.get(index, id2label.get(str(index), f"LABEL_{index}"))


def _check_distinct(names: list[str]) -> None:
    seen: dict[str, str] = {}
    for name in names:
        key = _key(name)
        if key in seen:
            raise InvalidInputError(f"the class names {seen[key]!r} and {name!r} are the same ignoring case, so "
                                    "labels cannot be matched to them: give distinct names (--label-map)")
        seen[key] = name


def _mapping(names: list[str]) -> dict[str, int]:
    return {name: index for index, name in enumerate(names)}


def _key(name) -> str:
    return str(name).strip().casefold()


# -- labels ----------------------------------------------------------------------------------

def _as_list(raw_labels) -> list:
    """Plain Python values from a list, array, Series or tensor (whose items would be 0-d tensors)."""
    tolist = getattr(raw_labels, "tolist", None)
    return list(tolist()) if callable(tolist) else list(raw_labels)


def _as_indices(values: list) -> np.ndarray | None:
    """The labels as class indices when every one is an integer (or a numeric string), else None."""
    array = np.asarray(values) if values else np.empty(0, dtype=np.int64)
    if array.ndim == 1 and array.dtype.kind in "iub":   # the common case, without a loop in Python
        return array.astype(np.int64)
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        index = _as_index(value)
        if index is None:
            return None
        out[i] = index
    return out


def _as_index(value) -> int | None:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not float(value).is_integer():
            raise InvalidInputError(f"label {value} is fractional: labels must be class indices or names")
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    return None


def _check_range(indices: np.ndarray, num_labels: int) -> None:
    bad = np.flatnonzero((indices < 0) | (indices >= num_labels))
    if len(bad):
        i = int(bad[0])
        raise InvalidInputError(f"label {indices[i]} of example {i} is outside the model's classes "
                                f"0..{num_labels - 1}; the model has {num_labels} labels")


def _all_known(values: list, names: list[str]) -> bool:
    known = {_key(n) for n in names}
    return all(_key(v) in known for v in values)


def _match_names(values: list, names: list[str], explicit: bool) -> np.ndarray:
    lookup = {_key(name): index for index, name in enumerate(names)}
    unknown = sorted({str(v).strip() for v in values if _key(v) not in lookup})
    if unknown:
        source = "the label map" if explicit else "the model's labels"
        fix = ("add them to the label map" if explicit else
               "correct the data, or map every name with --label-map (label_names= in Python)")
        raise InvalidInputError(f"label(s) {unknown[:10]} are not among {source} {names}: {fix}")
    return np.array([lookup[_key(v)] for v in values], dtype=np.int64)


def _needs_mapping_message(values: list, num_labels: int) -> str:
    found = sorted({str(v).strip() for v in values}, key=str.casefold)
    example = {name: index for index, name in enumerate(found[:num_labels])}
    placeholders = ", ".join(f"LABEL_{i}" for i in range(min(num_labels, 3))) + (", ..." if num_labels > 3 else "")
    more = (f" The data holds {len(found)} names for {num_labels} classes: correct it first."
            if len(found) > num_labels else "")
    return (f"the labels are names {found[:10]} but the model's classes are unnamed ({placeholders}), so it is "
            "not known which name is which class index. Say how the model was trained, e.g. "
            f"--label-map {format_mapping(example)} (t3vis record), or label_names={list(example)} "
            f"(index order, in Python); the indices here are an example, use the training's.{more}")


def resolve_categories(values: Sequence | np.ndarray, n: int, names: Sequence[str] | None = None) -> ResolvedLabels:
    """A generative task's example categories (a topic, a language): not what the model predicts,
    a class per example the viewer colours and filters by. values: names, or indices into names;
    without names, the distinct values sorted become the names (indices then name themselves)."""
    raw = _as_list(values)
    if len(raw) != n:
        raise InvalidInputError(f"{len(raw)} categories for {n} probe examples: give one per example")
    if names is not None:
        names = [str(name) for name in names]
        _check_distinct(names)
        indices = _as_indices(raw)
        if indices is not None:
            _check_range(indices, len(names))
            return ResolvedLabels(indices, names, _mapping(names))
        return ResolvedLabels(_match_names(raw, names, explicit=True), names, _mapping(names))
    found = sorted({str(v).strip() for v in raw}, key=lambda s: (len(s) if s.isdigit() else 0, s))
    if not found or "" in found:
        raise InvalidInputError("a category is empty: give every example a category name (or none at all)")
    _check_distinct(found)
    return ResolvedLabels(_match_names(raw, found, explicit=True), found, _mapping(found))
