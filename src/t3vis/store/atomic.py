"""Atomic writes: stage, then rename. A crash leaves the old file or none, never half a file.

Replacing a folder that already exists (re-recording a checkpoint) takes two renames, so it
follows a rename-aside protocol that never leaves the old and the new copy both missing:

    1. rename FINAL -> TRASH        (TRASH = trash_prefix + FINAL's name, beside it)
    2. rename STAGING -> FINAL      (the new copy is in place)
    3. rename TRASH -> a staging name, then delete it

`recover_replaced` repairs a kill between the steps: a TRASH whose FINAL is missing (killed
between 1 and 2) is renamed back to FINAL; a TRASH beside its FINAL (killed between 2 and 3)
is discarded. A leftover staging folder holds nothing anyone needs (`remove_stale_staging`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


def trash_path(final: Path, trash_prefix: str) -> Path:
    """Where `final`'s old copy waits while a new copy replaces it."""
    return final.parent / f"{trash_prefix}{final.name}"


@contextmanager
def staged_directory(final: Path, staging_prefix: str, trash_prefix: str) -> Iterator[Path]:
    """Yield an empty staging directory beside `final`; move it to `final` when the block succeeds.

    An existing `final` is replaced by the rename-aside protocol of this module, so a crash at any
    point leaves the old or the new complete copy. On an exception the staging directory is
    removed and the old copy stays. After a SIGKILL, `recover_replaced` and `remove_stale_staging`
    (called before the next write) put things right.
    """
    final = Path(final)
    trash = trash_path(final, trash_prefix)
    _recover_one(final, trash, staging_prefix)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=staging_prefix))
    try:
        yield staging
        _fsync_tree(staging)  # contents reach the disk before the rename makes them visible
        if final.exists():
            _replace_aside(staging, final, trash, staging_prefix)
        else:
            os.replace(staging, final)
            _fsync_dir(final.parent)
    except BaseException:
        _recover_one(final, trash, staging_prefix)  # an error between the renames: the old copy back
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_aside(staging: Path, final: Path, trash: Path, staging_prefix: str) -> None:
    os.replace(final, trash)
    os.replace(staging, final)
    _fsync_dir(final.parent)  # the new copy is durable before the old one goes
    with contextlib.suppress(OSError):  # the new copy is in; recover_replaced retries the cleanup
        _discard(trash, staging_prefix)


def _discard(folder: Path, staging_prefix: str) -> None:
    """Delete a folder by first renaming it to a staging name: a half-deleted folder is never
    left under a name that recovery would restore."""
    doomed = folder.parent / f"{staging_prefix}discard-{secrets.token_hex(6)}"
    try:
        os.replace(folder, doomed)
    except FileNotFoundError:  # another writer's recovery got there first
        return
    shutil.rmtree(doomed, ignore_errors=True)


def _recover_one(final: Path, trash: Path, staging_prefix: str) -> None:
    if not trash.exists():
        return
    if final.exists():        # killed after the new copy was in place: the old one is garbage
        _discard(trash, staging_prefix)
    else:                     # killed between the two renames: the old copy is the only one
        try:
            os.replace(trash, final)
        except FileNotFoundError:  # another writer's recovery got there first
            return
        _fsync_dir(final.parent)


def recover_replaced(parent: Path, trash_prefix: str, staging_prefix: str) -> None:
    """Finish or undo every replacement in `parent` that a crash interrupted."""
    for trash in Path(parent).glob(trash_prefix + "*"):
        final = trash.parent / trash.name[len(trash_prefix):]
        _recover_one(final, trash, staging_prefix)


def remove_stale_staging(parent: Path, staging_prefix: str) -> None:
    for p in Path(parent).glob(staging_prefix + "*"):
        shutil.rmtree(p, ignore_errors=True)
