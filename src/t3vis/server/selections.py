"""Selections held by the server, so a selection of any size travels as a short handle.

    store = SelectionStore()
    handle = store.put("demo", ids)        # "sel-<16 hex>": a pure function of the run and the set of ids
    store.get("demo", handle)              # the ids (sorted, distinct), or SelectionExpired

A page posts its selection once (POST /api/runs/{run}/selections: int64 ids or a bitmap over the
probe rows) and then names it by handle in the table, heads, pruning and summary requests, so no
request carries a million ids twice. Handles live in memory only, per run, in an LRU bounded by
the total number of ids held (not by the number of selections: one selection of 10,000,000 ids
weighs what 10,000 of 1,000 do). A handle the store does not hold (never made, evicted, the server
restarted, or made for another run) is "expired": the page posts the selection again and retries.

The ids bodies are parsed here too (numpy, never a Python int per id).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from t3vis.errors import InvalidInputError

MAX_HELD_IDS = 50_000_000        # ids held over all selections (8 bytes each: 400 MB at most)
HANDLE_PATTERN = r"^sel-[0-9a-f]{16}$"


class SelectionExpired(LookupError):
    """A handle this store does not hold for the run asked (api.py answers it 410)."""

    def __init__(self, handle: str, detail: str):
        super().__init__(detail)
        self.handle = handle
        self.detail = detail


def handle_of(run: str, ids: np.ndarray) -> str:
    """The handle of a set of ids of a run: the same run and set always give the same handle.
    ids: sorted, distinct int64 (what distinct_ids returns)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(run.encode("utf-8", "surrogatepass") + b"\x00")
    digest.update(np.ascontiguousarray(ids, dtype="<i8").tobytes())
    return f"sel-{digest.hexdigest()}"


def distinct_ids(ids) -> np.ndarray:
    """The ids as sorted, distinct int64 (a sort and a neighbour comparison: numpy 2's np.unique
    took 0.5 s for 500,000 ids, its sort 12 ms)."""
    ordered = np.sort(np.asarray(ids, dtype=np.int64))
    if len(ordered) < 2:
        return ordered
    first = np.empty(len(ordered), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered if first.all() else ordered[first]


def ids_from_bytes(body: bytes) -> np.ndarray:
    """Little-endian int64 ids from a request body, sorted and distinct; a body that is not whole
    int64s, or holds none, is a 422."""
    if len(body) % 8:
        raise InvalidInputError(f"the body holds {len(body)} bytes, not a whole number of int64 ids (8 bytes "
                                "each, little-endian)")
    if not body:
        raise InvalidInputError("the selection is empty: send at least one id")
    return distinct_ids(np.frombuffer(body, dtype="<i8"))


def rows_from_bitmap(body: bytes, n_rows: int) -> np.ndarray:
    """The probe rows set in a bitmap (bit i: byte i >> 3, bit i & 7, least significant first);
    a bitmap of another length than ceil(n_rows / 8) bytes is a 422. Padding bits are ignored."""
    expected = (n_rows + 7) // 8
    if len(body) != expected:
        raise InvalidInputError(f"the bitmap holds {len(body)} bytes; the run has {n_rows} probe rows, so it "
                                f"takes ceil({n_rows} / 8) = {expected} bytes")
    bits = np.unpackbits(np.frombuffer(body, dtype=np.uint8), bitorder="little")[:n_rows]
    return np.flatnonzero(bits)


class SelectionStore:
    """Thread-safe handles -> ids, per run, least recently used dropped beyond max_ids ids held
    (the newest selection is always kept, however large)."""

    def __init__(self, max_ids: int = MAX_HELD_IDS):
        self.max_ids = max_ids
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held_ids(self) -> int:
        with self._lock:
            return self._held

    def put(self, run: str, ids: np.ndarray) -> str:
        """Hold ids (sorted, distinct int64) for run; their handle."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        ids.setflags(write=False)                   # shared by every request that names the handle
        handle = handle_of(run, ids)
        key = (run, handle)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._held -= len(old)
            self._items[key] = ids
            self._held += len(ids)
            while self._held > self.max_ids and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._held -= len(dropped)
        return handle

    def get(self, run: str, handle: str) -> np.ndarray:
        """The ids of handle (now the most recently used); SelectionExpired when not held for run."""
        with self._lock:
            ids = self._items.get((run, handle))
            if ids is not None:
                self._items.move_to_end((run, handle))
                return ids
            elsewhere = sorted(r for r, h in self._items if h == handle)
        where = f" (it was made for run {elsewhere[0]!r}, not {run!r})" if elsewhere else ""
        raise SelectionExpired(handle, f"selection {handle} expired: send it again{where}; post the selection to "
                                       f"/api/runs/{run}/selections for a handle of this run")
