"""What every model pass needs of a classifier's examples and of a wrapped model.

The batching that record and analysis share (sorted by length, padded on the right, results
scattered back to the caller's order) is the task's: t3vis.tasks.base.Task.batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
from torch import nn

from t3vis.errors import InvalidInputError, UnsupportedModelError

Labels: TypeAlias = "Sequence[int] | np.ndarray"     # class indices, one per text


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel or DataParallel."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        inner = model.module
        if isinstance(inner, nn.Module):
            return inner
    return model


def num_labels(model: nn.Module) -> int:
    """The classifier's number of classes, from its config (`config.num_labels`)."""
    count = getattr(getattr(model, "config", None), "num_labels", None)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UnsupportedModelError(f"{type(model).__name__} has no config.num_labels: t3vis needs a sequence "
                                    "classifier, e.g. one loaded with AutoModelForSequenceClassification")
    return count


def validate_examples(texts: Sequence[str], labels: Labels, num_labels: int, *,
                      what: str = "probe set") -> np.ndarray:
    """labels as int64 class indices, after checking texts and labels pair up and fit the model."""
    if len(texts) == 0:
        raise InvalidInputError(f"the {what} is empty: give at least one text and label")
    if len(texts) != len(labels):
        raise InvalidInputError(f"{len(texts)} texts but {len(labels)} labels: give one label per text")
    try:
        classes = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise InvalidInputError("labels must be class indices (integers); map label names to 0..C-1 first") from None
    bad = (classes < 0) | (classes >= num_labels)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(f"label {classes[i]} of example {i} is outside the model's classes "
                                f"0..{num_labels - 1}; the model has {num_labels} labels "
                                "(set num_labels when loading it)")
    not_text = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if not_text:
        raise InvalidInputError(f"example {not_text[0]} is {type(texts[not_text[0]]).__name__}, not text")
    return classes
