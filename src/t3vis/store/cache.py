"""A small on-disk cache of derived arrays (projections and the like) in a run's `cache/` folder.

    cache = ArrayCache(run_dir)
    key = {"what": "projection", "step": 250, "layer": 6, "method": "umap", "params": {...},
           "data": data_fingerprint(ck.path / "hidden.npy")}
    layout = cache.get(key)            # ndarray, or None on a miss
    if layout is None:
        layout = project(...)
        cache.put(key, layout)

A key is any JSON-able dict; its canonical JSON (sorted keys, no spaces) is hashed with sha256
to name the file, `cache/<sha256>.npy`. Put a fingerprint of the source data in the key
(`data_fingerprint`), so that re-recording a checkpoint makes its old entries misses rather
than stale hits. Files are written atomically (stage, then rename), so a reader sees a whole
file or none; an unreadable file is a miss and is removed. The folder is safe to delete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from t3vis.errors import InvalidInputError, NotFoundError
from t3vis.store import schema
from t3vis.store.atomic import write_bytes_atomic

_SAMPLE_BYTES = 1 << 16     # bytes hashed at each of the start, middle and end of a data file


def canonical_key(key: dict) -> str:
    """The canonical JSON of a key: sorted keys, no whitespace, numpy scalars as plain numbers."""
    if not isinstance(key, dict):
        raise InvalidInputError(f"a cache key must be a dict; got {type(key).__name__}")
    try:
        return json.dumps(key, sort_keys=True, separators=(",", ":"), default=_plain, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"cache key is not JSON-able ({e}): {key!r}") from None


def key_digest(key: dict) -> str:
    return hashlib.sha256(canonical_key(key).encode()).hexdigest()


def data_fingerprint(path: str | Path) -> dict:
    """{"size", "mtime_ns", "sample"}: a cheap identity of a data file (hashes 192 KiB at most)."""
    path = Path(path)
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, st.st_size // 2 - _SAMPLE_BYTES // 2), max(0, st.st_size - _SAMPLE_BYTES)}):
            f.seek(offset)
            h.update(f.read(_SAMPLE_BYTES))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sample": h.hexdigest()[:32]}


class ArrayCache:
    """Arrays stored under `run_dir/cache/`, one `.npy` per key."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / schema.CACHE_DIR

    def path_for(self, key: dict) -> Path:
        return self.folder / f"{key_digest(key)}.npy"

    def get(self, key: dict) -> np.ndarray | None:
        """The array stored under key, or None (a missing or unreadable file is a miss)."""
        path = self.path_for(key)
        try:
            with open(path, "rb") as f:
                return np.load(f, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (ValueError, OSError, EOFError):        # truncated or foreign bytes: drop the file
            path.unlink(missing_ok=True)
            return None

    def put(self, key: dict, array) -> Path:
        """Store array under key, atomically; returns the file's path."""
        array = np.asarray(array)
        if array.dtype.hasobject:
            raise InvalidInputError("the cache stores numeric arrays only; got an object array")
        path = self.path_for(key)
        if not self.run_dir.is_dir():
            raise NotFoundError(f"cannot cache into {self.run_dir}: the run folder does not exist")
        self.folder.mkdir(exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        write_bytes_atomic(path, buffer.getvalue())
        return path

    def clear(self) -> int:
        """Remove every cached array (and stray staging files); returns how many files went."""
        removed = 0
        for p in self.folder.glob("*.npy") if self.folder.is_dir() else ():
            p.unlink(missing_ok=True)
            removed += 1
        for p in self.folder.glob(".*.tmp") if self.folder.is_dir() else ():
            p.unlink(missing_ok=True)
        return removed


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON-able")
