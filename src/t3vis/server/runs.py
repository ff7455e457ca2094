"""The runs a server was given: unique names, opened lazily, nothing else on disk reachable.

A run is named by the basename of its folder, made unique with -2, -3, ... (docs/api.md).

A run is followed while it is written. Each `RunHandle` looks at its folder at most once per
_LOOK_TTL_S (half a second), however many requests ask: run.json's size and time, the
checkpoint folders' names and their meta.json times, the training-dynamics parts. One look
(`RunLook`) serves every request until it expires; it holds the opened `Run`, the complete
checkpoints and a `version` that grows by one whenever what the look saw changed, so a page
polling GET /api/runs/{run}/version learns of a new checkpoint within a second without any
request scanning the disk of its own. A cache read on demand, rather than a watcher thread:
nothing runs while nobody looks, it works on every file system (network ones give no change
events), and a request never sees a list older than the version it was told.

The `Checkpoint` objects are kept across looks, so their cached, memory-mapped arrays outlive a
request; the checkpoints are re-scanned (their meta.json read) only when the listing changed.

A run's state (RunLook.state):
  waiting  its folder does not exist yet, is empty, or holds a run being created (no run.json
           yet): its routes answer 409 (RunNotStartedError) until run.json appears, then it is
           served as any other, without a restart.
  ready    run.json reads.
  gone     its folder was deleted or moved while served: its routes answer 409 saying so.
  damaged  run.json does not read (or went missing): its routes answer the reader's
           CorruptRunError (409, naming the file).
A checkpoint whose meta.json is damaged is left out of the list and its routes answer that
error; the other checkpoints are served as usual. A checkpoint folder deleted while served
simply leaves the list.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from t3vis.cartography import RegionRule, region_rule
from t3vis.errors import CorruptRunError, InvalidInputError, NotFoundError, T3VisError
from t3vis.server.columns import Columns, columns_of
from t3vis.server.models import RunState
from t3vis.store import schema
from t3vis.store.reader import Checkpoint, Run, open_run
from t3vis.store.writer import _CREATING_MARKER  # what a run being created holds until run.json

log = logging.getLogger("t3vis.server")

_LOOK_TTL_S = 0.5

class RunNotStartedError(T3VisError):
    """A served run with nothing recorded yet (no run.json): its routes answer 409 until it starts."""


def waiting_message(path: Path) -> str:
    """What `t3vis serve` prints, once, for a run it waits for."""
    return (f"waiting for a run at {path} (nothing recorded there yet); "
            "the page will show it when it starts")


@dataclass(frozen=True)
class DynamicsVersion:
    """Identity of a run's training-dynamics files: a change makes every derived table stale."""

    files: tuple[tuple[str, int, int], ...]     # (name, size, mtime_ns)

    @property
    def paths(self) -> list[str]:
        return [name for name, _, _ in self.files]


@dataclass(frozen=True)
class RunLook:
    """One look at a run's folder, shared by every request for _LOOK_TTL_S."""

    version: int                        # grows by one whenever what a look sees changes
    state: RunState
    run: Run | None                     # the opened run, when ready
    checkpoints: tuple[Checkpoint, ...] = ()            # complete ones, sorted by step
    damaged: dict[int, CorruptRunError] = field(default_factory=dict)   # step -> why its meta.json does not read
    dynamics: int = 0                   # training-dynamics parts written
    error: T3VisError | None = None     # what the run's routes answer when it is not ready

    @property
    def steps(self) -> list[int]:
        return [ck.step for ck in self.checkpoints]

    @property
    def detail(self) -> str | None:
        return None if self.error is None else str(self.error)


class RunHandle:
    def __init__(self, name: str, path: Path, index: int):
        self.name = name
        self.path = path
        self.index = index                  # stable small integer, used to name derived tables
        self._lock = threading.RLock()
        self._seen = False                  # run.json was there once: a missing folder is gone, not waiting
        self._run: Run | None = None
        self._run_stamp: tuple[int, int] | None = None     # run.json's (size, mtime_ns) when _run was read
        self._checkpoints: dict[int, tuple[int, Checkpoint]] = {}     # step -> (meta mtime_ns, Checkpoint)
        self._listing: tuple | None = None  # the checkpoint folders' listing the scan below was made from
        self._scanned: tuple[list[Checkpoint], dict[int, CorruptRunError]] = ([], {})
        self._look: RunLook | None = None
        self._looked_at = -1e9
        self._observed: tuple | None = None     # what the latest look saw, to tell whether the next changed
        self._checked: dict[object, object] = {}           # file(s) -> the version whose columns were checked
        self._datamap: tuple[DynamicsVersion, pd.DataFrame, RegionRule] | None = None

    # -- following the run -------------------------------------------------------------

    def look(self) -> RunLook:
        """The latest look at the run's folder, at most _LOOK_TTL_S old (one disk look per period)."""
        with self._lock:
            if self._look is not None and time.monotonic() - self._looked_at < _LOOK_TTL_S:
                return self._look
            self._look = self._look_at_disk()
            self._looked_at = time.monotonic()
            return self._look

    def _look_at_disk(self) -> RunLook:
        state, error = self._open()
        cks, damaged = self._scan(self._run) if state == "ready" and self._run is not None else ([], {})
        dynamics = self.dynamics_version()
        observed = (state, None if error is None else str(error), self._run_stamp,
                tuple((ck.step, self._checkpoints[ck.step][0]) for ck in cks), tuple(sorted(damaged)),
                dynamics.files, _file_version(self.examples_path) if state == "ready" else None)
        version = self._look.version if self._look is not None else 0
        if observed != self._observed:
            version, self._observed = version + 1, observed
        return RunLook(version, state, self._run if state == "ready" else None, tuple(cks), damaged,
                       len(dynamics.files), error)

    def _open(self) -> tuple[RunState, T3VisError | None]:
        """The run's state, (re-)reading run.json when it changed."""
        if not self.path.is_dir():
            return ("gone", self._gone()) if self._seen else ("waiting", self._not_started())
        meta = self.path / schema.RUN_META
        stamp = _file_version(meta)
        if stamp is None:
            if _being_created(self.path):
                return "waiting", self._not_started()
            return "damaged", CorruptRunError(
                f"run {self.name!r} has no {schema.RUN_META}: {meta} is missing, so {self.path} is not a t3vis run "
                "(restore the file, or re-record the run)")
        if self._run is not None and stamp == self._run_stamp:
            return "ready", None
        self._seen = True
        try:
            run = open_run(self.path)
        except (CorruptRunError, NotFoundError) as e:       # NotFoundError: run.json went in between
            self._run, self._run_stamp = None, stamp
            return "damaged", CorruptRunError(str(e))
        # a re-written run.json (or a run recorded anew in the same folder): checkpoints are rebuilt on it
        self._run, self._run_stamp = run, stamp
        self._checkpoints, self._listing = {}, None
        return "ready", None

    def _scan(self, run: Run) -> tuple[list[Checkpoint], dict[int, CorruptRunError]]:
        """The complete checkpoints and the damaged ones; their meta.json files are read only when the
        listing of checkpoint folders (names, meta.json times) changed since the last scan."""
        listing = _checkpoint_listing(self.path / schema.CHECKPOINTS_DIR)
        if listing == self._listing:
            return self._scanned
        fresh = []
        found, damaged = run.scan_checkpoints()
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
        self._listing, self._scanned = listing, (fresh, damaged)
        return self._scanned

    def _gone(self) -> CorruptRunError:
        return CorruptRunError(f"run {self.name!r} is gone: its folder {self.path} was moved or deleted while "
                               "the server runs; restore it, or restart `t3vis serve` with the runs that exist")

    def _not_started(self) -> RunNotStartedError:
        where = "does not exist yet" if not self.path.exists() else "holds no run.json yet"
        return RunNotStartedError(f"run {self.name!r} has not started recording yet: {self.path} {where}; "
                                  "its views open once t3vis.Recorder (or `t3vis record --out`) writes it there")

    # -- the run and its checkpoints ---------------------------------------------------

    @property
    def run(self) -> Run:
        if not self.path.is_dir() and self._seen:
            raise self._gone()                  # at once, not after the look expires
        look = self.look()
        if look.run is None:
            raise look.error or self._not_started()
        return look.run

    @property
    def meta(self) -> dict:
        return self.run.meta

    @property
    def columns(self) -> Columns:
        """The per-example columns the run's task has (its table, points and history)."""
        return columns_of(self.run.task_format, categorised=bool(self.run.label_names))

    def checkpoints(self) -> list[Checkpoint]:
        """Complete checkpoints, sorted by step, as the latest look found them."""
        _ = self.run                            # a run not ready answers why
        return list(self.look().checkpoints)

    def checkpoint(self, step: int | None) -> Checkpoint:
        """The checkpoint at `step`, or the latest one for None."""
        _ = self.run
        look = self.look()
        cks = list(look.checkpoints)
        if step is None:
            if not cks:
                raise NotFoundError(f"run {self.name!r} has no complete checkpoint yet; record a snapshot first")
            return cks[-1]
        for ck in cks:
            if ck.step == step:
                return ck
        if step in look.damaged:
            raise look.damaged[step]
        raise NotFoundError(f"run {self.name!r} has no checkpoint at step {step}; "
                            f"it has steps {[c.step for c in cks]}")

    def checkpoint_stamp(self, ck: Checkpoint) -> int:
        """When the checkpoint was written (its meta.json's mtime_ns): a key part for what is cached of it,
        so a checkpoint recorded anew at the same step (a run deleted and recorded again) is not served stale."""
        with self._lock:
            kept = self._checkpoints.get(ck.step)
        return kept[0] if kept is not None and kept[1] is ck else _mtime(ck.path / schema.CHECKPOINT_META)

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


def _checkpoint_listing(folder: Path) -> tuple[tuple[str, int], ...]:
    """(name, meta.json mtime_ns or -1) of every checkpoint folder: one directory read and a stat each."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return ()
    names = sorted(e.name for e in entries if schema.parse_checkpoint_dirname(e.name) is not None)
    return tuple((name, _mtime(folder / name / schema.CHECKPOINT_META)) for name in names)


def _being_created(folder: Path) -> bool:
    """An empty folder, or one RunWriter.create is filling (run.json comes last): a run to wait for."""
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError:
        return False
    return not names or _CREATING_MARKER in names


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except (FileNotFoundError, NotADirectoryError):
        return -1


class RunRegistry:
    """Every run given on the command line, by unique name; nothing else.

    A path that does not exist yet, or an empty folder, or one a run is being created in, is served
    as waiting (`waiting` lists them, for `t3vis serve` to say so). A file, or a folder of other
    files without run.json (most likely a typo), is refused with the reader's message."""

    def __init__(self, paths):
        self._runs: dict[str, RunHandle] = {}
        self.waiting: list[RunHandle] = []          # nothing recorded at start: waited for
        for i, p in enumerate(paths):
            path = Path(p).expanduser().resolve()
            _check_servable(path)
            base = path.name or "run"
            name, k = base, 2
            while name in self._runs:
                name, k = f"{base}-{k}", k + 1
            handle = RunHandle(name, path, i)
            look = handle.look()
            if look.state == "waiting":
                self.waiting.append(handle)
            elif look.state == "damaged":       # served: its routes answer 409 with this
                log.warning("run %s is damaged: %s", path, look.detail)
            self._runs[name] = handle

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


def _check_servable(path: Path) -> None:
    """Refuse at start what can never become a run: a file, a folder of other things without run.json."""
    if path.exists() and not path.is_dir():
        raise InvalidInputError(f"{path} is a file, not a run folder: pass the folder that t3vis.Recorder or "
                                "`t3vis record --out` writes (or will write)")
    if path.is_dir() and not (path / schema.RUN_META).exists() and not _being_created(path):
        open_run(path)              # NotFoundError: "... is not a t3vis run: it has no run.json ..."
