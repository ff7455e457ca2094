"""Per-example arrays written a batch of rows at a time, in memory or straight into .npy files.

A probe pass produces one row per example (of every array with an example axis: hidden states,
gate gradients) a batch at a time, in the batches' order. `MemoryRows` keeps them in an array;
`RowFile` writes them into a .npy file (by way of a spool, see there), so the writing process never
holds more of the file than a batch or a chunk, however many examples it has (the pages wait in the
kernel's page cache, which writes them back and reclaims them on its own).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

CHUNK_BYTES = 8 << 20   # rows RowFile.finish and copy_into move at a time (finish holds about 3 copies)


class RowSink(Protocol):
    """Where a per-example array goes: rows along `axis`, a batch of them at a time."""

    axis: int

    def put(self, rows: np.ndarray | slice, values: np.ndarray) -> None:
        """Write values (the array's shape, with len(rows) along axis) at rows."""

    def finish(self) -> None:
        """Every row put is in its place (called once the last batch is in)."""

    def read(self) -> np.ndarray:
        """The whole array (a read-only memory map for a file)."""


class MemoryRows:
    """A RowSink in memory."""

    def __init__(self, array: np.ndarray, axis: int = 0):
        self.array, self.axis = array, axis

    def put(self, rows: np.ndarray | slice, values: np.ndarray) -> None:
        self.array[_along(self.axis, rows)] = values

    def finish(self) -> None:
        pass

    def read(self) -> np.ndarray:
        return self.array


class RowFile:
    """A .npy file of a fixed shape and type, filled rows (along `axis`) at a time.

    put() appends each batch to a spool file beside it, in the order the batches come, with one
    write; finish() puts the rows in their places, a chunk of rows at a time. Writing a length-
    sorted batch's scattered rows straight into place would cost a system call or a page fault
    per row and layer, and a memory map kept open would hold every page it touched in the
    process's resident set. Picklable (names and layout, nothing open), so a rank can hand its
    file to rank 0 under torch.distributed; rank 0 then copies it into place (copy_into)."""

    def __init__(self, path: str | Path, shape: tuple[int, ...], dtype, axis: int = 0):
        """Create the file (zeros; sparse where the filesystem allows)."""
        self.path, self.shape, self.dtype, self.axis = Path(path), tuple(int(s) for s in shape), np.dtype(dtype), axis
        created = np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype, shape=self.shape)
        self.offset = int(created.offset)
        del created
        self.spool = self.path.with_name(f".{self.path.name}.spool")
        self._arrived: list[np.ndarray] = []      # the rows of each put, in order: where the spool's rows go

    @property
    def num_rows(self) -> int:
        return self.shape[self.axis]

    @property
    def row_shape(self) -> tuple[int, ...]:
        return _without(self.shape, self.axis)

    @property
    def row_bytes(self) -> int:
        """Bytes of one row's contiguous run in the file (everything after the row axis)."""
        return int(np.prod(self.shape[self.axis + 1:], dtype=np.int64)) * self.dtype.itemsize

    @property
    def blocks(self) -> int:
        """How many runs of rows the file holds (everything before the row axis: hidden states' layers)."""
        return int(np.prod(self.shape[:self.axis], dtype=np.int64))

    def put(self, rows: np.ndarray | slice, values: np.ndarray) -> None:
        index = np.arange(*rows.indices(self.num_rows)) if isinstance(rows, slice) else np.asarray(rows, np.int64)
        spooled = np.ascontiguousarray(np.moveaxis(np.asarray(values, dtype=self.dtype), self.axis, 0))
        if spooled.shape != (len(index), *self.row_shape):
            raise ValueError(f"{len(index)} rows of shape {self.row_shape} expected, got {values.shape}")
        with open(self.spool, "ab") as f:
            f.write(spooled.data)
        self._arrived.append(index)

    def finish(self, chunk_bytes: int | None = None) -> None:
        """Move the spooled rows into their places (rows never put stay zero) and drop the spool.
        Holds a chunk of rows at a time (CHUNK_BYTES), and maps no more of the spool than that
        chunk touches."""
        if not self._arrived:
            return
        chunk_bytes = chunk_bytes or CHUNK_BYTES
        arrived = np.concatenate(self._arrived)
        where = np.full(self.num_rows, -1, np.int64)
        where[arrived] = np.arange(len(arrived))     # a row put twice: its last values
        full_row = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        pages_per_row = 1 + full_row // 4096 + 1
        step = max(1, min(chunk_bytes // max(1, full_row), chunk_bytes // (4096 * pages_per_row)))
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for first in range(0, self.num_rows, step):
                last = min(first + step, self.num_rows)
                positions = where[first:last]
                chunk = np.zeros((last - first, *self.row_shape), self.dtype)
                spool = np.memmap(self.spool, dtype=self.dtype, mode="r", shape=(len(arrived), *self.row_shape))
                chunk[positions >= 0] = spool[positions[positions >= 0]]
                del spool                              # the pages this chunk touched leave with the mapping
                self._write_rows(fd, first, np.moveaxis(chunk, 0, self.axis))
        finally:
            os.close(fd)
        self.spool.unlink()
        self._arrived = []

    def _write_rows(self, fd: int, first: int, values: np.ndarray) -> None:
        """values (the file's shape with some rows) into rows first.. with a write per block."""
        runs = np.ascontiguousarray(values).reshape(self.blocks, -1)
        for block in range(self.blocks):
            os.pwrite(fd, runs[block].data, self.offset + (block * self.num_rows + first) * self.row_bytes)

    def read(self) -> np.ndarray:
        """The whole array, memory-mapped read-only (the rows put so far in their places first)."""
        self.finish()
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)

    def copy_into(self, target: RowFile, start: int, chunk_bytes: int | None = None) -> None:
        """Copy every row of this file into target's rows start.. (same layout otherwise), a chunk
        of rows of one block at a time: never more than chunk_bytes (CHUNK_BYTES) in memory."""
        chunk_bytes = chunk_bytes or CHUNK_BYTES
        if self.axis != target.axis or _without(self.shape, self.axis) != _without(target.shape, target.axis):
            raise ValueError(f"rows of shape {self.shape} (axis {self.axis}) do not fit {target.shape}")
        if self._arrived:
            raise ValueError(f"{self.path.name} has rows put but not finished: finish() it first")
        step = max(1, chunk_bytes // max(1, self.row_bytes))
        source, destination = os.open(self.path, os.O_RDONLY), os.open(target.path, os.O_WRONLY)
        try:
            for block in range(self.blocks):
                read_base = self.offset + block * self.num_rows * self.row_bytes
                write_base = target.offset + (block * target.num_rows + start) * target.row_bytes
                for first in range(0, self.num_rows, step):
                    size = (min(first + step, self.num_rows) - first) * self.row_bytes
                    chunk = os.pread(source, size, read_base + first * self.row_bytes)
                    if len(chunk) != size:
                        raise OSError(f"{self.path} is shorter than its header says")
                    os.pwrite(destination, chunk, write_base + first * self.row_bytes)
        finally:
            os.close(source)
            os.close(destination)

    def sync(self) -> None:
        """Make what was written durable (another host may read the file next, on a shared disk)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _along(axis: int, rows: np.ndarray | slice) -> tuple:
    return (slice(None),) * axis + (rows,)


def _without(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    return shape[:axis] + shape[axis + 1:]
