"""The runs a server was given: unique names, opened lazily, nothing else on disk reachable.

A run is named by the basename of its folder, made unique with -2, -3, ... (docs/api.md).
Each `RunHandle` opens its run on first use (reading run.json only) and keeps the
`Checkpoint` objects it hands out, so their cached, memory-mapped arrays outlive a request;
the checkpoint list is re-read at most once a second, so checkpoints written while the
server runs appear without a restart.

A damaged run is still served: its routes answer the reader's CorruptRunError (409, naming
the file). A checkpoint whose meta.json is damaged is left out of the list and its routes
answer that error; the other checkpoints are served as usual.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from t3vis.cartography import RegionRule, region_rule
from t3vis.errors import CorruptRunError, NotFoundError
from t3vis.server.columns import Columns, columns_of
from t3vis.store import schema
from t3vis.store.reader import Checkpoint, Run, open_run

log = logging.getLogger("t3vis.server")

_LIST_TTL_S = 1.0


@dataclass(frozen=True)
class DynamicsVersion:
    """Identity of a run's training-dynamics files: a change makes every derived table stale."""

    files: tuple[tuple[str, int, int], ...]     # (name, size, mtime_ns)

    @property
    def paths(self) -> list[str]:
        return [name for name, _, _ in self.files]


class RunHandle:
    def __init__(self, name: str, path: Path, index: int):
        self.name = name
        self.path = path
        self.index = index                  # stable small integer, used to name derived tables
        self._lock = threading.RLock()
        self._run: Run | None = None
        self._checkpoints: dict[int, tuple[int, Checkpoint]] = {}     # step -> (meta mtime_ns, Checkpoint)
        self._listed_at = -1e9
        self._order: list[Checkpoint] = []
        self._damaged: dict[int, CorruptRunError] = {}     # step -> why its meta.json does not read
        self._checked: dict[object, object] = {}           # file(s) -> the version whose columns were checked
        self._datamap: tuple[DynamicsVersion, pd.DataFrame, RegionRule] | None = None

    # -- the run and its checkpoints ---------------------------------------------------

    @property
    def run(self) -> Run:
        if not self.path.is_dir():
            raise CorruptRunError(f"run {self.name!r} is gone: its folder {self.path} was moved or deleted while "
                                  "the server runs; restore it, or restart `t3vis serve` with the runs that exist")
        with self._lock:
            if self._run is None:
                self._run = open_run(self.path)
            return self._run

    @property
    def meta(self) -> dict:
        return self.run.meta

    @property
    def columns(self) -> Columns:
        """The per-example columns the run's task has (its table, points and history)."""
        return columns_of(self.run.task_format, categorised=bool(self.run.label_names))

    def checkpoints(self) -> list[Checkpoint]:
        """Complete checkpoints, sorted by step (re-listed at most once a second)."""
        with self._lock:
            now = time.monotonic()
            if now - self._listed_at < _LIST_TTL_S:
                return list(self._order)
            fresh = []
            found, self._damaged = self.run.scan_checkpoints()
            for ck in found:
                stamp = _mtime(ck.path / schema.CHECKPOINT_META)
                kept = self._checkpoints.get(ck.step)
                if kept is not None and kept[0] == stamp and kept[1].path == ck.path:
                    ck = kept[1]                       # keep its cached arrays
                self._checkpoints[ck.step] = (stamp, ck)
                fresh.append(ck)
            steps = {c.step for c in fresh}
            for gone in [s for s in self._checkpoints if s not in steps]:
                del self._checkpoints[gone]
            self._order = fresh
            self._listed_at = now
            return list(fresh)

    def checkpoint(self, step: int | None) -> Checkpoint:
        """The checkpoint at `step`, or the latest one for None."""
        cks = self.checkpoints()
        if step is None:
            if not cks:
                raise NotFoundError(f"run {self.name!r} has no complete checkpoint yet; record a snapshot first")
            return cks[-1]
        for ck in cks:
            if ck.step == step:
                return ck
        if step in self._damaged:
            raise self._damaged[step]
        raise NotFoundError(f"run {self.name!r} has no checkpoint at step {step}; "
                            f"it has steps {[c.step for c in cks]}")

    # -- files ---------------------------------------------------------------------------

    @property
    def examples_path(self) -> Path:
        return self.path / schema.EXAMPLES

    def outputs_path(self, ck: Checkpoint) -> Path:
        return ck.path / schema.OUTPUTS

    def checked_examples_path(self) -> str:
        """The examples table's path for DuckDB, after the reader checked its columns."""
        path = self.examples_path
        self._check_once(path, _file_version(path), self.run.check_examples)
        return str(path)

    def checked_outputs_path(self, ck: Checkpoint) -> str:
        """A checkpoint's outputs table's path for DuckDB, after the reader checked its columns."""
        path = self.outputs_path(ck)
        self._check_once(path, _file_version(path), ck.check_outputs)
        return str(path)

    def checked_dynamics_paths(self) -> list[str]:
        """The training-dynamics parts for DuckDB, after the reader checked their columns."""
        version = self.dynamics_version()
        self._check_once(schema.DYNAMICS_DIR, version, self.run.dynamics_parts)
        return [f[0] for f in version.files]

    def _check_once(self, key, version, check) -> None:
        """Run the reader's column check of a file once per version of it (size, mtime), not on every
        request: a table page must not re-read Parquet footers it has already checked."""
        with self._lock:
            if version is not None and self._checked.get(key) == version:
                return
        check()                                  # CorruptRunError (409) when the file is damaged
        with self._lock:
            self._checked[key] = version

    def num_examples(self) -> int:
        path = self.run.check_examples()
        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except Exception as e:      # pyarrow raises several types for a damaged file
            raise CorruptRunError(f"the examples table of run {self.name!r} is unreadable "
                                  f"({type(e).__name__}: {e}): {path} (re-record the run)") from None

    def dynamics_version(self) -> DynamicsVersion:
        folder = self.path / schema.DYNAMICS_DIR
        files = []
        for p in sorted(folder.glob("part-*.parquet")) if folder.is_dir() else ():
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            files.append((str(p), st.st_size, st.st_mtime_ns))
        return DynamicsVersion(tuple(files))

    def datamap(self) -> tuple[DynamicsVersion, pd.DataFrame]:
        """(DynamicsVersion, DataFrame id, confidence, variability, correctness, epochs, region), cached."""
        version, frame, _ = self._datamap_and_rule()
        return version, frame

    def region_rule(self) -> RegionRule:
        """The thresholds the data map's regions were drawn with (1/K confidence, K the run's classes, or
        the task's threshold: TaskFormat.confidence_threshold)."""
        return self._datamap_and_rule()[2]

    def _datamap_and_rule(self) -> tuple[DynamicsVersion, pd.DataFrame, RegionRule]:
        version = self.dynamics_version()
        with self._lock:
            if self._datamap is not None and self._datamap[0] == version:
                return self._datamap
        # the reader's data map (t3vis.cartography), and the same rule with its numbers: confidence splits at
        # 1/K for K classes, at the task's own threshold where it has one (a generative run has no classes)
        frame = self.run.dynamics()
        classes = len(self.run.label_names)
        rule = region_rule(frame["variability"].to_numpy(), num_classes=max(classes, 1),
                           confidence_threshold=self.run.task_format.hard_to_learn_below(classes))
        with self._lock:
            self._datamap = (version, frame, rule)
            return self._datamap


def _file_version(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return -1


class RunRegistry:
    """Every run given on the command line, by unique name; nothing else."""

    def __init__(self, paths):
        self._runs: dict[str, RunHandle] = {}
        for i, p in enumerate(paths):
            path = Path(p).expanduser().resolve()
            try:
                open_run(path)                  # no run there: fail at start, with the reader's message
            except CorruptRunError as e:        # a damaged one is served: its routes answer 409 with this
                log.warning("run %s is damaged: %s", path, e)
            base = path.name or "run"
            name, k = base, 2
            while name in self._runs:
                name, k = f"{base}-{k}", k + 1
            self._runs[name] = RunHandle(name, path, i)

    @property
    def names(self) -> list[str]:
        return list(self._runs)

    def handles(self) -> list[RunHandle]:
        return list(self._runs.values())

    def get(self, name: str) -> RunHandle:
        handle = self._runs.get(name)
        if handle is None:
            raise NotFoundError(f"no run named {name!r}; this server serves {self.names} "
                                "(runs are named by their folder; pass more to `t3vis serve`)")
        return handle
