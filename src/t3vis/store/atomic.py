"""Atomic writes: stage, then rename. A crash leaves the old file or none, never half a file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        else:
            _fsync_dir(path)
    _fsync_dir(folder)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json_atomic(path: Path, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


@contextmanager
def staged_directory(final: Path, staging_prefix: str) -> Iterator[Path]:
    """Yield an empty staging directory beside `final`; rename it to `final` on success.

    On an exception the staging directory is removed. After a SIGKILL it stays, hidden
    by its prefix, and `remove_stale_staging` clears it on the next write.
    """
    final = Path(final)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=staging_prefix))
    try:
        yield staging
        _fsync_tree(staging)  # contents reach the disk before the rename makes them visible
        if final.exists():  # re-recording a step replaces it, still atomically for readers
            trash = Path(tempfile.mkdtemp(dir=final.parent, prefix=staging_prefix))
            os.replace(final, trash / final.name)
            os.replace(staging, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_stale_staging(parent: Path, staging_prefix: str) -> None:
    for p in Path(parent).glob(staging_prefix + "*"):
        shutil.rmtree(p, ignore_errors=True)
