"""Checks of the arguments a training loop hands to Recorder.observe: each raises
InvalidInputError naming the argument and the shapes, before anything is kept."""

from __future__ import annotations

import numpy as np
import torch

from t3vis.errors import InvalidInputError


def as_logits(logits, classes: int) -> torch.Tensor:
    """logits as a (rows, classes) floating tensor, or InvalidInputError naming the shape."""
    try:
        tensor = logits if torch.is_tensor(logits) else torch.as_tensor(np.asarray(logits, dtype=np.float32))
    except (TypeError, ValueError):
        raise InvalidInputError(f"logits of type {type(logits).__name__} are not numbers: pass the model's "
                                "output logits, a (batch, num_labels) tensor") from None
    if tensor.dim() != 2 or tensor.shape[1] != classes:
        raise InvalidInputError(f"logits have shape {tuple(tensor.shape)}; expected (batch, {classes}): one row per "
                                f"example and one column per class of the model ({classes})")
    if not (tensor.is_floating_point() or tensor.dtype in _INTEGER_DTYPES):
        raise InvalidInputError(f"logits have dtype {tensor.dtype}; pass the model's floating-point logits")
    return tensor


_INTEGER_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def as_integer_vector(values, name: str, rows: int, meaning: str) -> torch.Tensor:
    """values as a 1-D integer tensor of `rows` entries, or InvalidInputError naming `name` and the shapes."""
    if torch.is_tensor(values):
        tensor = values
    else:
        array = np.asarray(values)
        if array.size == 0:
            array = array.astype(np.int64)  # [] has no dtype to judge
        if array.dtype.kind not in "iu":
            raise InvalidInputError(f"{name} must be integers, got {array.dtype} values: pass {meaning} "
                                    "(e.g. a list of int or an int64 tensor)")
        tensor = torch.as_tensor(array.astype(np.int64))
    if tensor.dtype not in _INTEGER_DTYPES:
        raise InvalidInputError(f"{name} must be integers, got a {tensor.dtype} tensor: pass {meaning} "
                                "(convert with .long())")
    if tensor.dim() != 1 or tensor.shape[0] != rows:
        raise InvalidInputError(f"{name} has shape {tuple(tensor.shape)} but logits have {rows} rows: pass {meaning}, "
                                f"shape ({rows},)")
    return tensor


def checkable_now(labels: torch.Tensor) -> bool:
    """Whether reading the labels' values costs no device sync (they are in host memory)."""
    return labels.device.type == "cpu"


def check_classes(labels: torch.Tensor, classes: int) -> None:
    bad = (labels < 0) | (labels >= classes)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise InvalidInputError(f"labels[{row}] = {int(labels[row])} is outside the model's classes 0..{classes - 1}: "
                                "pass class indices (map label names to 0..C-1 first)")
