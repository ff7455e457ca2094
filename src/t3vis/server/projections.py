"""Projections computed in the background, cached on disk and in memory, with progress to poll.

The first request for (run, checkpoint, layer, method, alignment) queues a job and answers its
status; the client polls the same URL. A job runs t3vis.analysis (this module holds no layout
logic), then `neighborhood_preservation` for the checkpoint asked for. Large runs: over
DEFAULT_MAX_FIT points (25,000) a t-SNE or UMAP layout is fitted on a seeded sample and the rest
placed among it (`Result.sampled`, the X-T3vis-Sampled header); over PRESERVATION_EXACT_UP_TO
(50,000) the preservation is measured on a seeded sample of points, NaN for the others, and its
mean is over those measured. The progress messages say both.

Alignment, three modes:
- "previous" (aligned, the default): the first checkpoint is laid out on its own; each later one
  starts from the layout of the one before and is fitted onto it (`align_next`). A checkpoint's
  layout depends only on the checkpoints up to it, and so does its cache key (their
  fingerprints), so a checkpoint landing while the run grows never moves the points of earlier
  layouts: their keys and cached arrays stay as they are. A request computes only what is
  missing: it extends the longest cached prefix of the chain.
- "final" (aligned, asked for explicitly): anchored at the last checkpoint, walking outwards
  (`project_aligned`), the layout of a finished run; every checkpoint's key names the whole
  series, so a new checkpoint re-lays them all. Never applied unless asked for.
- "plain" (aligned=false): the checkpoint's own layout.

Following a growing run: the service remembers which (layer, method, stack, mode) of a run were
viewed and, with `background=True` (the default), a daemon thread re-lists the followed runs'
checkpoints about once a second; for each checkpoint that appears it lays out the viewed combos
(a "final" view is followed with "previous": re-laying the whole series per checkpoint would not
keep up) and the configured defaults (`follow_defaults`, the last layer with UMAP), so that a
user opening a checkpoint a minute after it landed finds its layout ready. The work runs in the
server's process, never in the training loop. One layout at a time: user jobs and background
work share one compute lock, and the background waits while a user job is queued or running.

Jobs run one at a time (a projection uses every core); progress is by stage, coarse but
honest: loading, laying out, measuring preservation. Cache keys hold a fingerprint of every
hidden-state file involved, so a re-recorded checkpoint is recomputed, never served stale.
A failed job is reported as failed (with the analysis' message) for FAILURE_TTL_S seconds,
then dropped from the job table (every request sweeps out expired failures, so the table holds
only live jobs and recent failures); a request after that tries again. Aligned layouts use
the checkpoints whose hidden states read: one damaged checkpoint answers its own 409 and
leaves the others' layouts alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from t3vis.errors import CorruptRunError, InvalidInputError, T3VisError
from t3vis.server.lru import LRU
from t3vis.store import schema
from t3vis.store.cache import ArrayCache, data_fingerprint, key_digest

if TYPE_CHECKING:
    from t3vis.server.runs import RunHandle
    from t3vis.store.reader import Checkpoint

log = logging.getLogger("t3vis.server")

K_NEIGHBOURS = 10
SEED = 0
FAILURE_TTL_S = 30.0
MEMORY_ENTRIES = 32
LAYOUT_MEMORY_ENTRIES = 64          # layouts kept in memory too: chains still grow in a read-only run folder
ALIGNS = ("previous", "final")
POLL_S = 1.0                        # how often followed runs are re-listed (RunHandle re-lists at most once a second)
FOLLOW_DEFAULTS: tuple[tuple[int | str, str], ...] = (("last", "umap"),)

Mode = Literal["plain", "previous", "final"]


@dataclass
class Result:
    data: bytes                 # float32 (N, 3) row-major: x, y, preservation (NaN where not measured)
    rows: int
    sampled: bool               # the layout was fitted on a sample and the rest placed among it
    mean_preservation: float    # over the points measured: every point, or a sample above 50,000


JobStatus = Literal["queued", "running", "failed"]


@dataclass
class Job:
    status: JobStatus
    progress: float
    message: str
    failed_at: float = 0.0      # time.monotonic() of the failure

    def expired(self, now: float) -> bool:
        """A failure old enough to be dropped (and the projection tried again)."""
        return self.status == "failed" and now - self.failed_at >= FAILURE_TTL_S


@dataclass(frozen=True)
class Plan:
    """What one checkpoint's layout depends on: the checkpoints of its series and their cache keys."""

    key: tuple                  # (run name, digest of the checkpoint's layout key): the job's and result's key
    run_dir: Path               # the run folder (its cache/)
    ck: Checkpoint              # the checkpoint asked for
    layer: int
    stack: str
    method: str
    mode: Mode
    series: list[Checkpoint]    # plain: [ck]; previous: first .. ck; final: every checkpoint
    layout_keys: list[dict]     # one per checkpoint of the series
    target: int                 # ck's index in the series

    @property
    def layout_key(self) -> dict:
        return self.layout_keys[self.target]


@dataclass
class _Followed:
    handle: RunHandle
    known: set[int]                                             # steps seen so far
    combos: set[tuple] = field(default_factory=set)            # (layer, method, stack, mode) viewed


class Projections:
    """The projection jobs of a server, and the background work that keeps growing runs laid out.

    workers: threads for user jobs (one: a projection uses every core). background: follow runs
    and lay out new checkpoints (off in tests that count jobs). follow_defaults: (layer, method)
    laid out for every new checkpoint of a followed run, layer an index or "last".
    """

    def __init__(self, workers: int = 1, *, background: bool = True,
                 follow_defaults: Sequence[tuple[int | str, str]] = FOLLOW_DEFAULTS, poll_s: float = POLL_S):
        self._workers = workers
        self._executor: ThreadPoolExecutor | None = None     # made on first use, again after a shutdown
        self._jobs: dict[tuple, Job] = {}
        self._results: LRU[Result] = LRU(MEMORY_ENTRIES)
        self._layouts: LRU[np.ndarray] = LRU(LAYOUT_MEMORY_ENTRIES)
        self._lock = threading.Lock()
        self._compute = threading.Lock()                     # one layout at a time, user jobs and background alike
        self._user_pending = 0                               # user jobs queued or running: the background waits
        self.background = background
        self.follow_defaults = [(layer, method) for layer, method in follow_defaults]
        self._poll_s = poll_s
        self._followed: dict[str, _Followed] = {}
        self._todo: deque[tuple] = deque()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None

    def shutdown(self) -> None:
        """Cancel queued jobs and stop following runs (the app is stopping); a running layout finishes
        in its thread."""
        with self._lock:
            executor, self._executor = self._executor, None
            for key in [k for k, j in self._jobs.items() if j.status == "queued"]:
                del self._jobs[key]
            self._stop.set()
            self._follower = None
            self._followed.clear()
            self._todo.clear()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def job_count(self) -> int:
        with self._lock:
            return len(self._jobs)

    def _sweep(self) -> None:
        """Drop expired failures; the caller holds the lock."""
        now = time.monotonic()
        for key in [k for k, j in self._jobs.items() if j.expired(now)]:
            del self._jobs[key]

    def _live_job(self, key) -> Job | None:
        """A copy of the job under key, unless there is none (or only an expired failure)."""
        self._sweep()
        job = self._jobs.get(key)
        return None if job is None else Job(job.status, job.progress, job.message, job.failed_at)

    # -- requests ------------------------------------------------------------------------

    def request(self, handle, ck, layer: int, method: str, aligned: bool, stack: str | None = None, *,
                align: str = "previous") -> Result | Job:
        """The finished projection of one stack's layer (None: the default stack), or the status
        of the job computing it (started if need be). aligned=False: the checkpoint's own layout;
        else align="previous" (each checkpoint fitted onto the one before) or "final" (anchored at
        the last checkpoint)."""
        if align not in ALIGNS:
            raise InvalidInputError(f"unknown alignment {align!r}; choose one of {list(ALIGNS)}")
        mode: Mode = "previous" if aligned and align == "previous" else "final" if aligned else "plain"
        plan = self.plan(handle, ck, layer, method, mode, stack)
        self._remember(handle, (layer, method, plan.stack, mode))
        ready = self._ready(plan)
        if ready is not None:
            return ready
        with self._lock:
            live = self._live_job(plan.key)
            if live is not None:
                return live
            many = len(plan.series) > 1
            job = Job("queued", 0.0, f"queued: {method} of layer {layer}"
                      + (f" at {len(plan.series)} checkpoints (aligned)" if many else ""))
            self._jobs[plan.key] = job
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="t3vis-projection")
            self._user_pending += 1
            self._executor.submit(self._user_job, plan, job)
        return Job(job.status, job.progress, job.message)

    def plan(self, handle, ck, layer: int, method: str, mode: Mode, stack: str | None = None) -> Plan:
        """The series and cache keys of ck's layout; an unknown stack or layer, or damaged hidden
        states of ck, raise now (404 / 409), not in a job."""
        run = handle.run
        stack = run.stack(stack).name      # unknown stack: a 404 naming the run's
        ck.hidden(layer, stack)
        series = [ck]
        if mode != "plain":
            series = [c for c in handle.checkpoints() if _same_shape(c, ck, stack)]
            steps = [c.step for c in series]
            if ck.step not in steps:
                series = [ck]
            elif mode == "previous":
                series = series[:steps.index(ck.step) + 1]
        hidden_file = schema.stack_file(schema.HIDDEN, stack, run.default_stack)
        fingerprints, kept = [], []
        for c in series:
            try:
                fingerprints.append((c.step, data_fingerprint(c.path / hidden_file)))
                kept.append(c)
            except FileNotFoundError:       # removed since the checkpoints were listed: leave it out
                if c.step == ck.step:
                    raise CorruptRunError(f"the hidden states of step {ck.step} are gone: "
                                          f"{c.path / hidden_file}") from None
        series = kept
        if mode == "previous":
            keys = [chain_key(fingerprints[:i + 1], layer, method, stack, run.default_stack)
                    for i in range(len(fingerprints))]
        else:
            keys = [layout_key(step, layer, method, mode == "final", fingerprints, stack, run.default_stack)
                    for step, _ in fingerprints]
        target = [c.step for c in series].index(ck.step)
        return Plan((handle.name, key_digest(keys[target])), handle.path, ck, layer, stack, method, mode, series,
                    keys, target)

    def cached_layout(self, plan: Plan) -> np.ndarray | None:
        """The layout of the plan's checkpoint if it is cached (in memory or in the run's cache/)."""
        return self._get_layout(ArrayCache(plan.run_dir), plan.layout_key)

    def _ready(self, plan: Plan) -> Result | Job | None:
        """The finished result, or the live job computing it, or None."""
        hit = self._results.get(plan.key)
        if hit is not None:
            return hit
        with self._lock:
            live = self._live_job(plan.key)
            if live is not None:
                return live
        cache = ArrayCache(plan.run_dir)
        layout = self._get_layout(cache, plan.layout_key)
        preservation = cache.get(preservation_key(plan.layout_key))
        if layout is not None and preservation is not None:
            return self._store(plan.key, plan.method, layout, preservation)
        return None

    # -- the job -------------------------------------------------------------------------

    def _user_job(self, plan: Plan, job: Job) -> None:
        try:
            self._run(plan, job)
        finally:
            with self._lock:
                self._user_pending -= 1

    def _run(self, plan: Plan, job: Job) -> None:
        from t3vis.analysis.projection import neighborhood_preservation

        def stage(progress: float, message: str) -> None:
            job.status, job.progress, job.message = "running", progress, message

        try:
            with self._compute:
                cache = ArrayCache(plan.run_dir)
                layout = self._layout(plan, cache, stage)
                X = plan.ck.hidden(plan.layer, plan.stack)
                stage(0.85, f"measuring neighbourhood preservation ({K_NEIGHBOURS} nearest neighbours"
                            f"{_preservation_sample(X.shape[0])})")
                k = min(K_NEIGHBOURS, X.shape[0] - 1)
                preservation = neighborhood_preservation(X, layout, k=k)
                _put(cache, preservation_key(plan.layout_key), preservation)
            self._store(plan.key, plan.method, layout, preservation)
            with self._lock:
                self._jobs.pop(plan.key, None)
        except Exception as e:      # reported to the client as a failed job, logged with its traceback
            if not isinstance(e, T3VisError):
                log.exception("projection job %s failed", plan.key)
            job.failed_at, job.message = time.monotonic(), f"the projection failed: {e}"
            job.status = "failed"                   # last: a sweep must never see a failure without its time

    def _layout(self, plan: Plan, cache: ArrayCache, stage: Callable[[float, str], None]) -> np.ndarray:
        """The plan's layout: cached, or computed (and every layout computed on the way cached)."""
        from t3vis.analysis import projection as P

        layout = self._get_layout(cache, plan.layout_key)
        if layout is not None:
            return layout
        layer, method, stack, series = plan.layer, plan.method, plan.stack, plan.series
        stage(0.05, f"reading the hidden states of layer {layer}")
        if plan.mode == "final" and len(series) > 1:
            stage(0.1, f"laying out layer {layer} at {len(series)} checkpoints with {method} (aligned)")

            def laid_out(done: int, total: int) -> None:
                stage(0.1 + 0.75 * done / total, f"laid out layer {layer} with {method} at {done} of "
                                                 f"{total} checkpoints (aligned)")

            layouts = P.project_aligned([c.hidden(layer, stack) for c in series], method, seed=SEED,
                                        on_layout=laid_out)
            for key, y in zip(plan.layout_keys, layouts):
                self._put_layout(cache, key, y)
            return layouts[plan.target]
        # plain, or the chain of "previous": extend the longest cached prefix up to the target
        start, layout = plan.target - 1, None
        while start >= 0:
            layout = self._get_layout(cache, plan.layout_keys[start])
            if layout is not None:
                break
            start -= 1
        if layout is None:
            X0 = series[0].hidden(layer, stack)
            stage(0.1, f"laying out layer {layer} with {method}{_fit_sample(method, X0.shape[0])}")
            start, layout = 0, P.project(X0, method, seed=SEED)
            self._put_layout(cache, plan.layout_keys[0], layout)
        for i in range(start + 1, plan.target + 1):
            stage(0.1 + 0.75 * (i - start - 1) / (plan.target - start),
                  f"laying out layer {layer} with {method} at step {series[i].step}, aligned to step "
                  f"{series[i - 1].step}")
            layout = P.align_next(series[i].hidden(layer, stack), series[i - 1].hidden(layer, stack), layout,
                                  method, seed=SEED)
            self._put_layout(cache, plan.layout_keys[i], layout)
        return layout

    def _get_layout(self, cache: ArrayCache, key: dict) -> np.ndarray | None:
        memory_key = (str(cache.folder), key_digest(key))
        hit = self._layouts.get(memory_key)
        return hit if hit is not None else cache.get(key)

    def _put_layout(self, cache: ArrayCache, key: dict, layout: np.ndarray) -> None:
        self._layouts.put((str(cache.folder), key_digest(key)), layout)
        _put(cache, key, layout)

    def _store(self, key, method, layout, preservation) -> Result:
        from t3vis.analysis.projection import DEFAULT_MAX_FIT

        layout = np.asarray(layout, np.float32)
        preservation = np.asarray(preservation, np.float32)
        n = layout.shape[0]
        data = np.empty((n, 3), dtype="<f4")
        data[:, :2] = layout
        data[:, 2] = preservation
        max_fit = DEFAULT_MAX_FIT.get(method)
        measured = preservation[np.isfinite(preservation)]          # a large layout's is measured on a sample
        result = Result(data.tobytes(), n, bool(max_fit is not None and n > max_fit),
                        float(measured.mean()) if len(measured) else 0.0)
        self._results.put(key, result)
        return result

    # -- following growing runs ------------------------------------------------------------

    def follow(self, handle) -> None:
        """Lay out the checkpoints that appear in this run from now on (viewed combos and the
        defaults), in the background. Idempotent."""
        self._remember(handle, None)

    def _remember(self, handle, combo: tuple | None) -> None:
        with self._lock:
            followed = self._followed.get(handle.name)
        if followed is None:
            try:
                known = {c.step for c in handle.checkpoints()}
            except T3VisError:
                known = set()
            with self._lock:
                followed = self._followed.setdefault(handle.name, _Followed(handle, known))
        with self._lock:
            if combo is not None:
                followed.combos.add(combo)
            if self.background and (self._follower is None or not self._follower.is_alive()):
                self._stop = threading.Event()
                self._follower = threading.Thread(target=self._follow_loop, args=(self._stop,), daemon=True,
                                                  name="t3vis-projection-follower")
                self._follower.start()

    def _follow_loop(self, stop: threading.Event) -> None:
        _lowest_priority()          # a training loop in this process (serve=True) keeps its pace
        while not stop.wait(self._poll_s):
            try:
                self._notice_new_checkpoints()
            except Exception:
                log.exception("listing the checkpoints of followed runs failed")
            while not stop.is_set():
                with self._lock:
                    if self._user_pending:                  # a user is waiting: their job goes first
                        item = None
                    elif not self._todo:
                        break
                    else:
                        item = self._todo.popleft()
                if item is None:
                    stop.wait(0.05)
                    continue
                try:
                    self._lay_out_in_background(*item)
                except Exception:            # the follower must outlive any one checkpoint
                    log.exception("laying out %s in the background failed", item[1:])

    def _notice_new_checkpoints(self) -> None:
        with self._lock:
            followed = list(self._followed.values())
        for f in followed:
            try:
                steps = [c.step for c in f.handle.checkpoints()]
            except T3VisError:
                continue
            with self._lock:
                new = [s for s in steps if s not in f.known]
                f.known = set(steps)
                combos = set(f.combos)
            if not new:
                continue
            combos |= self._default_combos(f.handle)
            with self._lock:
                for step in new:
                    for layer, method, stack, mode in sorted(combos, key=repr):
                        self._todo.append((f.handle, step, layer, method, stack,
                                           "previous" if mode == "final" else mode))

    def _default_combos(self, handle) -> set[tuple]:
        try:
            info = handle.run.stack(None)
        except T3VisError:
            return set()
        return {(info.num_layers if layer == "last" else int(layer), method, info.name, "previous")
                for layer, method in self.follow_defaults}

    def _lay_out_in_background(self, handle, step: int, layer: int, method: str, stack: str, mode: Mode) -> None:
        try:
            plan = self.plan(handle, handle.checkpoint(step), layer, method, mode, stack)
            if self._ready(plan) is not None:
                return
        except T3VisError as e:          # removed since, or damaged: nothing to lay out
            log.info("not laying out step %s of run %s in the background: %s", step, handle.name, e)
            return
        with self._lock:
            if self._live_job(plan.key) is not None:
                return
            job = Job("running", 0.0, f"laying out layer {layer} with {method} (started in the background)")
            self._jobs[plan.key] = job
        self._run(plan, job)


def _fit_sample(method: str, n: int) -> str:
    """How a layout of n points is made, for a progress message: "" or the sample it is fitted on."""
    from t3vis.analysis.projection import DEFAULT_MAX_FIT

    max_fit = DEFAULT_MAX_FIT.get(method)
    return "" if max_fit is None or n <= max_fit else f" (fitted on a sample of {max_fit:,} points, the rest placed)"


def _preservation_sample(n: int) -> str:
    """"" or the sample preservation is estimated on, for a progress message."""
    from t3vis.analysis.projection import PRESERVATION_EXACT_UP_TO, PRESERVATION_SAMPLE

    return "" if n <= PRESERVATION_EXACT_UP_TO else f", estimated on a sample of {PRESERVATION_SAMPLE:,} points"


def _same_shape(other, ck, stack: str) -> bool:
    """Whether other's hidden states of the stack read and have ck's shape (so they align with it)."""
    try:
        return bool(other.stack_hidden_states(stack).shape == ck.stack_hidden_states(stack).shape)
    except CorruptRunError as e:
        log.warning("leaving checkpoint %s out of an aligned projection: %s", other.step, e)
        return False


def layout_key(step: int, layer: int, method: str, aligned: bool, fingerprints, stack: str | None = None,
               default_stack: str | None = None) -> dict:
    """The cache key of a plain layout, or of one aligned over the whole series (anchored at its last
    checkpoint)."""
    from t3vis.analysis.projection import layout_rules

    key = {"what": "projection", "step": int(step), "layer": int(layer), "method": method, "seed": SEED,
           "params": {}, "metric": "cosine", "aligned": bool(aligned and len(fingerprints) > 1),
           "rules": layout_rules(method)}
    if stack is not None and stack != default_stack:
        key["stack"] = stack          # the default stack's keys stay as they were: caches stay valid
    if key["aligned"]:
        key["series"] = [[int(s), fp] for s, fp in fingerprints]
    else:
        key["data"] = dict(fingerprints)[step]
    return key


def chain_key(fingerprints, layer: int, method: str, stack: str | None = None,
              default_stack: str | None = None) -> dict:
    """The cache key of the last checkpoint of `fingerprints` in a chain anchored at the first: it
    names only the checkpoints up to it, so a later checkpoint never changes it. The first
    checkpoint's layout is its plain layout, under the plain key."""
    step = fingerprints[-1][0]
    key = layout_key(step, layer, method, len(fingerprints) > 1, fingerprints, stack, default_stack)
    if key["aligned"]:
        key["anchor"] = "first"       # the whole-series key of a final checkpoint would otherwise be the same
    return key


def preservation_key(layout_key: dict) -> dict:
    from t3vis.analysis.projection import PRESERVATION_EXACT_UP_TO, PRESERVATION_FULL_UP_TO, PRESERVATION_SAMPLE

    return {"what": "neighbourhood-preservation", "k": K_NEIGHBOURS, "layout": key_digest(layout_key),
            "full_space_up_to": PRESERVATION_FULL_UP_TO, "exact_up_to": PRESERVATION_EXACT_UP_TO,
            "sample": PRESERVATION_SAMPLE}


def _put(cache: ArrayCache, key: dict, array) -> None:
    try:
        cache.put(key, array)
    except (OSError, T3VisError) as e:       # a read-only run folder: keep the result in memory only
        log.warning("could not cache a projection in %s: %s", cache.folder, e)


def _lowest_priority() -> None:
    """Give the calling thread the lowest CPU priority (Linux: a thread is a task with a nice value
    of its own; threads it starts inherit it). Elsewhere, or where refused, it runs as it is."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
