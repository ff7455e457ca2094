"""The run directory: a versioned format that reads without torch (see schema.py)."""

from t3vis.store.reader import Checkpoint, Run, open_run

__all__ = ["Checkpoint", "Run", "open_run"]
