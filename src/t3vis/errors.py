"""Typed errors a user can cause. Each message names the thing and the fix.

The server maps `NotFoundError` to 404 and `InvalidInputError` to 422.
"""


class T3VisError(Exception):
    """Base class of every error t3vis raises on purpose."""


class NotFoundError(T3VisError, LookupError):
    """A run, checkpoint, layer, head or example that does not exist."""


class InvalidInputError(T3VisError, ValueError):
    """Input that t3vis cannot use: a missing column, labels out of range, an empty set."""


class CorruptRunError(T3VisError):
    """A run directory whose files are missing or unreadable."""


class UnsupportedModelError(T3VisError, TypeError):
    """A model whose attention blocks cannot be found from its structure."""
