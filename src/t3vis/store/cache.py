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

The folder is bounded: `max_bytes` (argument, else the environment variable
T3VIS_CACHE_MAX_BYTES, else 1 GiB). Before a write that would pass the bound, the least recently
used entries go first; a hit marks an entry used by setting its mtime to now. The entry being
written is never evicted, even when it alone is over the bound. Eviction only unlinks files, so
a process reading an entry as it is evicted still reads it whole (POSIX), and a process that
finds its entry gone sees a miss.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from t3vis.errors import InvalidInputError, NotFoundError
from t3vis.store import schema
from t3vis.store.atomic import write_bytes_atomic

_SAMPLE_BYTES = 1 << 16     # bytes hashed at each of the start, middle and end of a data file
DEFAULT_MAX_BYTES = 1 << 30  # per run
MAX_BYTES_ENV = "T3VIS_CACHE_MAX_BYTES"
_STALE_STAGING_S = 3600     # a staging file this old was left by a crashed write


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


def resolve_max_bytes(max_bytes: int | None = None) -> int:
    """The cache bound: the argument, else $T3VIS_CACHE_MAX_BYTES, else DEFAULT_MAX_BYTES."""
    if max_bytes is not None:
        source, value = "max_bytes", max_bytes
    elif os.environ.get(MAX_BYTES_ENV, "").strip():
        source, raw = MAX_BYTES_ENV, os.environ[MAX_BYTES_ENV].strip()
        try:
            value = int(raw)
        except ValueError:
            raise InvalidInputError(f"{MAX_BYTES_ENV}={raw!r} is not a whole number of bytes; set it to "
                                    f"e.g. {DEFAULT_MAX_BYTES} (1 GiB), or unset it for that default") from None
    else:
        return DEFAULT_MAX_BYTES
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InvalidInputError(f"{source} must be a positive whole number of bytes; got {value!r} "
                                f"(e.g. {DEFAULT_MAX_BYTES} for 1 GiB)")
    return int(value)


@dataclass(frozen=True)
class _Entry:
    path: Path
    size: int
    used_ns: int    # mtime: written or last read


class ArrayCache:
    """Arrays stored under `run_dir/cache/`, one `.npy` per key, at most `max_bytes` in all."""

    def __init__(self, run_dir: str | Path, max_bytes: int | None = None):
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / schema.CACHE_DIR
        self.max_bytes = resolve_max_bytes(max_bytes)

    def path_for(self, key: dict) -> Path:
        return self.folder / f"{key_digest(key)}.npy"

    def get(self, key: dict) -> np.ndarray | None:
        """The array stored under key, or None (a missing or unreadable file is a miss)."""
        path = self.path_for(key)
        try:
            with open(path, "rb") as f:
                array = np.load(f, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (ValueError, OSError, EOFError):        # truncated or foreign bytes: drop the file
            path.unlink(missing_ok=True)
            return None
        _mark_used(path)
        return array

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
        data = buffer.getvalue()
        self._make_room(len(data), keep=path)
        write_bytes_atomic(path, data)
        _mark_used(path)
        return path

    def size(self) -> int:
        """Bytes the cached arrays take now."""
        return sum(e.size for e in self._entries())

    def _make_room(self, incoming: int, keep: Path) -> None:
        """Evict least recently used entries until `incoming` more bytes fit (never `keep`)."""
        _remove_stale_staging(self.folder)
        others = sorted((e for e in self._entries() if e.path != keep), key=lambda e: (e.used_ns, e.path.name))
        total = sum(e.size for e in others)
        for entry in others:
            if total + incoming <= self.max_bytes:
                break
            if _evict(entry.path):
                total -= entry.size

    def _entries(self) -> list[_Entry]:
        entries = []
        for path in self.folder.glob("*.npy") if self.folder.is_dir() else ():
            try:
                st = path.stat()
            except FileNotFoundError:       # evicted by another process since the listing
                continue
            entries.append(_Entry(path, st.st_size, st.st_mtime_ns))
        return entries

    def clear(self) -> int:
        """Remove every cached array (and stray staging files); returns how many files went."""
        removed = 0
        for p in self.folder.glob("*.npy") if self.folder.is_dir() else ():
            p.unlink(missing_ok=True)
            removed += 1
        for p in self.folder.glob(".*.tmp") if self.folder.is_dir() else ():
            p.unlink(missing_ok=True)
        return removed


def _mark_used(path: Path) -> None:
    """Record a use in the mtime, from the clock in ns: the kernel's file times tick coarser."""
    now = time.time_ns()
    with contextlib.suppress(OSError):  # evicted meanwhile, or a read-only run folder: nothing to record
        os.utime(path, ns=(now, now))


def _evict(path: Path) -> bool:
    """Remove one entry; False where it cannot go (e.g. open elsewhere on Windows)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        return False
    return True


def _remove_stale_staging(folder: Path) -> None:
    """Staging files of writes that crashed count against no bound: remove them once old."""
    cutoff = time.time() - _STALE_STAGING_S
    for path in folder.glob(".*.tmp"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
        except OSError:
            continue


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
