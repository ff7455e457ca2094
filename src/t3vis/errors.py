"""Typed errors a user can cause. Each message names the thing and the fix.

The server maps `NotFoundError` to 404, `InvalidInputError` and `UnsupportedModelError` to 422,
and `CorruptRunError` to 409 (src/t3vis/server/errors.py).
"""


class T3VisError(Exception):
    """Base class of every error t3vis raises on purpose."""


class NotFoundError(T3VisError, LookupError):
    """A run, checkpoint, layer, head or example that does not exist."""


class InvalidInputError(T3VisError, ValueError):
    """Input that t3vis cannot use: a missing column, labels out of range, an empty set."""


class CorruptRunError(T3VisError):
    """A run directory whose files are missing, unreadable or inconsistent with run.json (the
    reader raises it for whatever a third-party reader fails on, naming the file), or a
    checkpoint whose weights lie outside the folders the run may load from."""


class UnsupportedModelError(T3VisError, TypeError):
    """A model whose attention blocks cannot be found from its structure."""
