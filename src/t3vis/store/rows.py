"""Per-example arrays written a batch of rows at a time, in memory or straight into .npy files.

A probe pass produces one row per example (of every array with an example axis: hidden states,
gate gradients) a batch at a time, in the batches' order. `MemoryRows` keeps them in an array;
`RowFile` writes them into a .npy file (by way of a spool, see there), so the writing process never
holds more of the file than a batch or a chunk, however many examples it has (the pages wait in the
kernel's page cache, which writes them back and reclaims them on its own).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import DTypeLike

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
        target.check_fits(self.shape, self.axis, start)
        for block, first, data in self.chunks(chunk_bytes):
            target.write_chunk(start, self.num_rows, block, first, data)

    def chunks(self, chunk_bytes: int | None = None) -> Iterator[tuple[int, int, bytes]]:
        """Every row of the file as (block, first row, the bytes of rows first.. of that block),
        chunk_bytes (CHUNK_BYTES) or less at a time: what copy_into moves, or a rank sends."""
        if self._arrived:
            raise ValueError(f"{self.path.name} has rows put but not finished: finish() it first")
        step = max(1, (chunk_bytes or CHUNK_BYTES) // max(1, self.row_bytes))
        source = os.open(self.path, os.O_RDONLY)
        try:
            for block in range(self.blocks):
                base = self.offset + block * self.num_rows * self.row_bytes
                for first in range(0, self.num_rows, step):
                    size = (min(first + step, self.num_rows) - first) * self.row_bytes
                    chunk = os.pread(source, size, base + first * self.row_bytes)
                    if len(chunk) != size:
                        raise OSError(f"{self.path} is shorter than its header says")
                    yield block, first, chunk
        finally:
            os.close(source)

    def check_fits(self, shape: tuple[int, ...], axis: int, start: int) -> None:
        """Raise unless rows of that shape (along axis) fit in this file from row start on."""
        rows = shape[axis] if axis < len(shape) else 0
        if axis != self.axis or _without(shape, axis) != self.row_shape or not 0 <= start <= self.num_rows - rows:
            raise ValueError(f"rows of shape {shape} (axis {axis}) do not fit {self.shape} from row {start}")

    def write_chunk(self, start: int, shard_rows: int, block: int, first: int, data: bytes) -> None:
        """One of chunks()' chunks of a shard of shard_rows rows into this file's rows start.. ."""
        rows, remainder = divmod(len(data), max(1, self.row_bytes))
        if remainder or not (0 <= block < self.blocks and 0 <= first <= shard_rows - rows
                             and 0 <= start <= self.num_rows - shard_rows):
            raise ValueError(f"a chunk of {len(data)} bytes at block {block}, row {first} of a shard of "
                             f"{shard_rows} rows does not fit {self.path.name} {self.shape} from row {start}")
        destination = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(destination, data, self.offset + (block * self.num_rows + start + first) * self.row_bytes)
        finally:
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


class RaggedRows:
    """Ragged per-example columns (a generative probe's values per target token), put a batch of
    examples at a time, like RowFile's rows: put() appends each column's values to a spool file;
    finish() writes them again in example order, a chunk at a time, into one raw file per column
    (`file(column)`), and keeps the offsets (example i's values are offsets[i]:offsets[i+1]).
    Picklable (names, offsets, nothing open): a rank's shard travels to rank 0 so."""

    def __init__(self, path: str | Path, num_rows: int, dtypes: Mapping[str, DTypeLike]):
        """path: the files' common name (`<path>.<column>`); rows never put have no values."""
        self.path, self.num_rows = Path(path), int(num_rows)
        self.dtypes = {column: np.dtype(dtype) for column, dtype in dtypes.items()}
        self.offsets: np.ndarray | None = None        # (num_rows + 1,) int64 once finished
        self._rows: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        for column in self.dtypes:
            self.file(column).write_bytes(b"")
            self._spool(column).write_bytes(b"")

    def file(self, column: str) -> Path:
        return self.path.with_name(f"{self.path.name}.{column}")

    def _spool(self, column: str) -> Path:
        return self.path.with_name(f".{self.path.name}.{column}.spool")

    @property
    def total(self) -> int:
        """How many values each column holds (once finished)."""
        assert self.offsets is not None, "finish() first"
        return int(self.offsets[-1])

    def put(self, rows: np.ndarray, columns: Mapping[str, Sequence[np.ndarray]]) -> None:
        """Each column's values of examples rows (one array per example, as long as the others')."""
        rows = np.asarray(rows, np.int64)
        lengths = np.array([len(values) for values in columns[next(iter(self.dtypes))]], np.int64)
        for column, dtype in self.dtypes.items():
            values = columns[column]
            if len(values) != len(rows) or any(len(v) != n for v, n in zip(values, lengths)):
                raise ValueError(f"{column}: {len(rows)} examples of {lengths.tolist()} values expected")
            with open(self._spool(column), "ab") as f:
                if len(values):
                    f.write(np.ascontiguousarray(np.concatenate(values), dtype=dtype).data)
        self._rows.append(rows)
        self._lengths.append(lengths)

    def finish(self, chunk_bytes: int | None = None) -> None:
        """Write the spooled values in example order (a chunk at a time) and drop the spools."""
        if self.offsets is not None:
            return
        rows = np.concatenate(self._rows) if self._rows else np.zeros(0, np.int64)
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        length_of, start_of = np.zeros(self.num_rows, np.int64), np.zeros(self.num_rows, np.int64)
        length_of[rows] = lengths                       # an example put twice: its last values
        start_of[rows] = np.cumsum(lengths) - lengths   # where its values lie in the spool
        offsets = np.concatenate([[0], np.cumsum(length_of)]).astype(np.int64)
        spooled = int(lengths.sum())
        for column, dtype in self.dtypes.items():
            # values a chunk: each costs its bytes and two int64s of index (where it lies in the spool)
            budget = max(1, (chunk_bytes or CHUNK_BYTES) // (dtype.itemsize + 16))
            with open(self.file(column), "wb") as out:
                first = 0
                while first < self.num_rows:
                    last = max(first + 1, int(np.searchsorted(offsets, offsets[first] + budget, "right")) - 1)
                    last = min(last, self.num_rows)
                    count = int(offsets[last] - offsets[first])
                    if count:
                        # value g of the output (example i's) is at start_of[i] + g - offsets[i] in the spool
                        where = np.arange(offsets[first], offsets[last])
                        where += np.repeat(start_of[first:last] - offsets[first:last], length_of[first:last])
                        spool = np.memmap(self._spool(column), dtype=dtype, mode="r", shape=(spooled,))
                        out.write(np.ascontiguousarray(spool[where]).data)
                        del spool                  # the pages this chunk touched leave with the mapping
                    first = last
            self._spool(column).unlink()
        self.offsets, self._rows, self._lengths = offsets, [], []

    def chunks(self, column: str, chunk_bytes: int | None = None) -> Iterator[bytes]:
        """A finished column's values in example order, chunk_bytes (CHUNK_BYTES) or less at a time."""
        self.finish()
        size = self.total * self.dtypes[column].itemsize
        step = max(1, (chunk_bytes or CHUNK_BYTES) // self.dtypes[column].itemsize) * self.dtypes[column].itemsize
        source = os.open(self.file(column), os.O_RDONLY)
        try:
            for at in range(0, size, step):
                chunk = os.pread(source, min(step, size - at), at)
                if len(chunk) != min(step, size - at):
                    raise OSError(f"{self.file(column)} is shorter than its offsets say")
                yield chunk
        finally:
            os.close(source)

    @classmethod
    def receiving(cls, path: str | Path, offsets: np.ndarray, dtypes: Mapping[str, DTypeLike]) -> RaggedRows:
        """A finished, empty copy of another process's RaggedRows of these offsets, whose columns'
        chunks (its chunks()) are appended in order with append()."""
        copy = cls(path, len(offsets) - 1, dtypes)
        for column in copy.dtypes:
            copy._spool(column).unlink()
        copy.offsets = np.asarray(offsets, np.int64)
        return copy

    def append(self, column: str, data: bytes) -> None:
        with open(self.file(column), "ab") as f:
            f.write(data)

    def sync(self) -> None:
        """Make the column files durable (another host may read them next, on a shared disk)."""
        for column in self.dtypes:
            fd = os.open(self.file(column), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self) -> dict[str, np.ndarray]:
        """offsets and every column, in memory (small runs, tests)."""
        self.finish()
        assert self.offsets is not None
        return {"offsets": self.offsets, **{c: np.fromfile(self.file(c), d) for c, d in self.dtypes.items()}}

    def remove(self) -> None:
        for column in self.dtypes:
            self.file(column).unlink(missing_ok=True)
            self._spool(column).unlink(missing_ok=True)


def _along(axis: int, rows: np.ndarray | slice) -> tuple:
    return (slice(None),) * axis + (rows,)


def _without(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    return shape[:axis] + shape[axis + 1:]
