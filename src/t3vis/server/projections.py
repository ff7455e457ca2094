"""Projections computed in the background, cached on disk and in memory, with progress to poll.

The first request for (run, checkpoint, layer, method, aligned) queues a job and answers its
status; the client polls the same URL. A job runs t3vis.analysis (this module holds no layout
logic): with aligned=true, `project_aligned` lays out the layer at every checkpoint at once
(each checkpoint starts from its neighbour's layout), and every checkpoint's layout is cached,
so scrubbing through checkpoints afterwards costs nothing; then `neighborhood_preservation`
for the checkpoint asked for (others get theirs on their first request, which is quick).

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

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np

from t3vis.errors import CorruptRunError, T3VisError
from t3vis.server.lru import LRU
from t3vis.store import schema
from t3vis.store.cache import ArrayCache, data_fingerprint, key_digest

log = logging.getLogger("t3vis.server")

K_NEIGHBOURS = 10
SEED = 0
FAILURE_TTL_S = 30.0
MEMORY_ENTRIES = 32


@dataclass
class Result:
    data: bytes                 # float32 (N, 3) row-major: x, y, preservation
    rows: int
    sampled: bool
    mean_preservation: float


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


class Projections:
    def __init__(self, workers: int = 1):
        self._workers = workers
        self._executor: ThreadPoolExecutor | None = None     # made on first use, again after a shutdown
        self._jobs: dict[tuple, Job] = {}
        self._results: LRU[Result] = LRU(MEMORY_ENTRIES)
        self._lock = threading.Lock()

    def shutdown(self) -> None:
        """Cancel queued jobs (the app is stopping); a running one finishes in its thread."""
        with self._lock:
            executor, self._executor = self._executor, None
            for key in [k for k, j in self._jobs.items() if j.status == "queued"]:
                del self._jobs[key]
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

    def request(self, handle, ck, layer: int, method: str, aligned: bool, stack: str | None = None) -> Result | Job:
        """The finished projection of one stack's layer (None: the default stack), or the status
        of the job computing it (started if need be)."""
        run = handle.run
        stack = run.stack(stack).name      # unknown stack: a 404 naming the run's
        ck.hidden(layer, stack)      # unknown layer or damaged hidden states: an error now, not in a job
        series = [c for c in handle.checkpoints() if _same_shape(c, ck, stack)] if aligned else [ck]
        if ck.step not in [c.step for c in series]:
            series = [ck]
        hidden_file = schema.stack_file(schema.HIDDEN, stack, run.default_stack)
        fingerprints = [(c.step, data_fingerprint(c.path / hidden_file)) for c in series]
        layout_keys = {step: layout_key(step, layer, method, aligned, fingerprints, stack, run.default_stack)
                       for step, _ in fingerprints}
        key = (handle.name, key_digest(layout_keys[ck.step]))
        hit = self._results.get(key)
        if hit is not None:
            return hit
        with self._lock:
            live = self._live_job(key)
            if live is not None:
                return live
        cache = ArrayCache(handle.path)
        layout = cache.get(layout_keys[ck.step])
        preservation = cache.get(preservation_key(layout_keys[ck.step]))
        if layout is not None and preservation is not None:
            return self._store(key, ck, method, layout, preservation)
        with self._lock:
            live = self._live_job(key)
            if live is not None:
                return live
            job = Job("queued", 0.0, f"queued: {method} of layer {layer}"
                      + (f" at {len(series)} checkpoints (aligned)" if len(series) > 1 else ""))
            self._jobs[key] = job
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="t3vis-projection")
            self._executor.submit(self._run, key, job, cache, series, ck, layer, stack, method, layout_keys)
        return Job(job.status, job.progress, job.message)

    # -- the job -------------------------------------------------------------------------

    def _run(self, key, job: Job, cache: ArrayCache, series, ck, layer, stack, method, layout_keys) -> None:
        from t3vis.analysis.projection import neighborhood_preservation, project, project_aligned

        def stage(progress: float, message: str) -> None:
            job.status, job.progress, job.message = "running", progress, message

        try:
            layout = cache.get(layout_keys[ck.step])
            if layout is None:
                stage(0.05, f"reading the hidden states of layer {layer}")
                if len(series) > 1:
                    stage(0.1, f"laying out layer {layer} at {len(series)} checkpoints with {method} (aligned)")

                    def laid_out(done: int, total: int) -> None:
                        stage(0.1 + 0.75 * done / total, f"laid out layer {layer} with {method} at {done} of "
                                                         f"{total} checkpoints (aligned)")

                    layouts = project_aligned([c.hidden(layer, stack) for c in series], method, seed=SEED,
                                              on_layout=laid_out)
                    for c, y in zip(series, layouts):
                        _put(cache, layout_keys[c.step], y)
                    layout = layouts[[c.step for c in series].index(ck.step)]
                else:
                    stage(0.1, f"laying out layer {layer} with {method}")
                    layout = project(ck.hidden(layer, stack), method, seed=SEED)
                    _put(cache, layout_keys[ck.step], layout)
            stage(0.85, f"measuring neighbourhood preservation ({K_NEIGHBOURS} nearest neighbours)")
            X = ck.hidden(layer, stack)
            k = min(K_NEIGHBOURS, X.shape[0] - 1)
            preservation = neighborhood_preservation(X, layout, k=k)
            _put(cache, preservation_key(layout_keys[ck.step]), preservation)
            self._store(key, ck, method, layout, preservation)
            with self._lock:
                self._jobs.pop(key, None)
        except Exception as e:      # reported to the client as a failed job, logged with its traceback
            if not isinstance(e, T3VisError):
                log.exception("projection job %s failed", key)
            job.failed_at, job.message = time.monotonic(), f"the projection failed: {e}"
            job.status = "failed"                   # last: a sweep must never see a failure without its time

    def _store(self, key, ck, method, layout, preservation) -> Result:
        from t3vis.analysis.projection import DEFAULT_MAX_FIT

        layout = np.asarray(layout, np.float32)
        preservation = np.asarray(preservation, np.float32)
        n = layout.shape[0]
        data = np.empty((n, 3), dtype="<f4")
        data[:, :2] = layout
        data[:, 2] = preservation
        max_fit = DEFAULT_MAX_FIT.get(method)
        result = Result(data.tobytes(), n, bool(max_fit is not None and n > max_fit),
                        float(preservation.mean()) if n else 0.0)
        self._results.put(key, result)
        return result


def _same_shape(other, ck, stack: str) -> bool:
    """Whether other's hidden states of the stack read and have ck's shape (so they align with it)."""
    try:
        return bool(other.stack_hidden_states(stack).shape == ck.stack_hidden_states(stack).shape)
    except CorruptRunError as e:
        log.warning("leaving checkpoint %s out of an aligned projection: %s", other.step, e)
        return False


def layout_key(step: int, layer: int, method: str, aligned: bool, fingerprints, stack: str | None = None,
               default_stack: str | None = None) -> dict:
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


def preservation_key(layout_key: dict) -> dict:
    from t3vis.analysis.projection import PRESERVATION_FULL_UP_TO

    return {"what": "neighbourhood-preservation", "k": K_NEIGHBOURS, "layout": key_digest(layout_key),
            "full_space_up_to": PRESERVATION_FULL_UP_TO}


def _put(cache: ArrayCache, key: dict, array) -> None:
    try:
        cache.put(key, array)
    except (OSError, T3VisError) as e:       # a read-only run folder: keep the result in memory only
        log.warning("could not cache a projection in %s: %s", cache.folder, e)
