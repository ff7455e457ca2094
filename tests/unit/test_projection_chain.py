"""Stable pictures while a run grows: each checkpoint's layout is aligned to the one before it and
cached under a key of the checkpoints up to it, so a new checkpoint never moves earlier layouts;
"final" alignment (anchored at the last checkpoint) stays available when asked for; new
checkpoints of viewed runs are laid out in the background.

Expected layouts come from t3vis.analysis.projection (project, align_next, project_aligned) on
the checkpoints' hidden states as the reader returns them, not from the service.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time

import numpy as np
import pytest
from conftest import make_labels, make_model, make_texts

from t3vis.analysis import projection as P
from t3vis.server import runs
from t3vis.server.projections import Job, Projections, Result
from t3vis.server.runs import RunHandle

LAYER = 2


@pytest.fixture
def growing(tmp_path, monkeypatch):
    """A run being recorded: checkpoints at steps 0 and 1 so far; `grow(step)` trains a little and
    records one more. Yields (handle, grow)."""
    import torch

    from t3vis import Recorder

    for ttl in ("_LOOK_TTL_S", "_LIST_TTL_S"):          # see a new checkpoint at once, not within a second
        if hasattr(runs, ttl):
            monkeypatch.setattr(runs, ttl, 0.0)
    model, tokenizer = make_model("bert")
    texts, labels = make_texts(24), make_labels(24)
    rec = Recorder(tmp_path / "run", model, tokenizer, texts, labels, splits=["train"] * 24, batch_size=8,
                   progress=False)
    generator = torch.Generator().manual_seed(0)

    def grow(step: int) -> None:
        with torch.no_grad():                           # stands in for training: every weight moves a little
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
        rec.snapshot(step=step, epoch=float(step))

    rec.snapshot(step=0, epoch=0.0)
    grow(1)
    yield RunHandle("run", tmp_path / "run", 0), grow
    rec.close()


def _states(handle, step, layer=LAYER):
    return np.asarray(handle.run.checkpoint(step).hidden(layer), np.float32)


def _layout(service, handle, step, layer=LAYER, method="pca", *, aligned=True, align="previous",
            timeout=60.0) -> np.ndarray:
    """The layout (N, 2) the service answers, once its job is done."""
    deadline = time.monotonic() + timeout
    while True:
        answer = service.request(handle, handle.checkpoint(step), layer, method, aligned, align=align)
        if isinstance(answer, Result):
            return np.frombuffer(answer.data, "<f4").reshape(answer.rows, 3)[:, :2].copy()
        assert answer.status != "failed", answer.message
        assert time.monotonic() < deadline, f"no layout of step {step} after {timeout} s: {answer.message}"
        time.sleep(0.05)


def _cache_files(handle) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((handle.path / "cache").glob("*.npy"))}


def _mean_sq(a, b) -> float:
    return float(((np.asarray(a, np.float64) - b) ** 2).sum(axis=1).mean())


# -- the analysis: a chain grows one checkpoint at a time -------------------------------------

@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_extending_a_chain_one_by_one_equals_project_aligned_from_the_first(method):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 12)) * 4
    X0 = (centres[rng.integers(0, 3, 90)] + rng.normal(size=(90, 12))).astype(np.float32)
    Xs = [X0, X0 + rng.normal(scale=0.3, size=X0.shape).astype(np.float32)]
    Xs += [Xs[1], Xs[1] + rng.normal(scale=0.3, size=X0.shape).astype(np.float32)]   # one frozen step
    params = {"perplexity": 10} if method == "tsne" else {}
    chain = [P.project(Xs[0], method, seed=3, **params)]
    for i in range(1, len(Xs)):
        chain.append(P.align_next(Xs[i], Xs[i - 1], chain[-1], method, seed=3, **params))
    at_once = P.project_aligned(Xs, method, anchor=0, seed=3, **params)
    for a, b in zip(chain, at_once):
        assert a.dtype == np.float32 and np.array_equal(a, b)
    assert np.array_equal(chain[2], chain[1]) and chain[2] is not chain[1]     # frozen: the same picture, a copy


def test_align_next_refuses_mismatched_rows_and_an_init():
    X = np.random.default_rng(0).normal(size=(10, 4))
    with pytest.raises(Exception, match="same examples"):
        P.align_next(X, X[:-1], np.zeros((10, 2)))
    with pytest.raises(Exception, match="init"):
        P.align_next(X, X, np.zeros((10, 2)), init=np.zeros((10, 2)))


# -- the server: earlier layouts never move ---------------------------------------------------

def test_a_new_checkpoint_leaves_earlier_layouts_bit_identical(growing, monkeypatch):
    handle, grow = growing
    service = Projections(background=False)
    before = {step: _layout(service, handle, step) for step in (0, 1)}
    files_before = _cache_files(handle)
    grow(2)

    laid_out = []
    real_project = P.project
    monkeypatch.setattr(P, "project", lambda *a, **k: laid_out.append(1) or real_project(*a, **k))
    got2 = _layout(service, handle, 2)
    assert len(laid_out) == 1          # only the new checkpoint was laid out, extending the cached chain

    files_after = _cache_files(handle)
    assert all(files_after.get(name) == data for name, data in files_before.items())   # not one byte moved
    fresh = Projections(background=False)                       # served from disk, not from memory
    for step in (0, 1):
        assert np.array_equal(_layout(fresh, handle, step), before[step])
        assert np.array_equal(_layout(service, handle, step), before[step])

    # the chain is what the analysis gives: step 0 alone, each next aligned onto the one before
    monkeypatch.setattr(P, "project", real_project)
    X = [_states(handle, s) for s in (0, 1, 2)]
    expected = P.project_aligned(X, "pca", anchor=0)
    assert np.array_equal(before[0], P.project(X[0], "pca"))
    for got, want in zip([before[0], before[1], got2], expected):
        np.testing.assert_array_equal(got, want)
    # 2 is fitted onto 1: no farther from it than its own, unaligned layout
    assert _mean_sq(got2, before[1]) <= _mean_sq(P.project(X[2], "pca"), before[1])


def test_final_alignment_anchors_at_the_last_checkpoint_and_only_when_asked(growing):
    handle, grow = growing
    service = Projections(background=False)
    previous = {step: _layout(service, handle, step) for step in (0, 1)}
    grow(2)
    X = [_states(handle, s) for s in (0, 1, 2)]
    final = {step: _layout(service, handle, step, align="final") for step in (0, 1, 2)}
    assert np.array_equal(final[2], P.project(X[2], "pca"))          # the anchor: its own layout
    for step, want in enumerate(P.project_aligned(X, "pca")):
        np.testing.assert_allclose(final[step], want, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(final[0], previous[0])                 # two alignments, two cache entries
    for step in (0, 1):                                              # the default still answers "previous"
        assert np.array_equal(_layout(service, handle, step), previous[step])
    plain = _layout(service, handle, 1, aligned=False)
    assert np.array_equal(plain, P.project(X[1], "pca"))
    with pytest.raises(Exception, match="alignment"):
        service.request(handle, handle.checkpoint(1), LAYER, "pca", True, align="first")


def test_a_checkpoint_removed_from_the_middle_still_answers(growing):
    handle, grow = growing
    service = Projections(background=False)
    grow(2)
    first = _layout(service, handle, 0)
    _layout(service, handle, 2)
    X0, X2 = _states(handle, 0), _states(handle, 2)
    shutil.rmtree(handle.checkpoint(1).path)
    assert [c.step for c in handle.checkpoints()] == [0, 2]
    for align in ("previous", "final"):
        got = _layout(service, handle, 2, align=align)
        assert got.shape == (24, 2) and np.isfinite(got).all()
    # the chain is now 0 -> 2; 0's layout did not move
    np.testing.assert_array_equal(_layout(service, handle, 2), P.align_next(X2, X0, P.project(X0, "pca"), "pca"))
    assert np.array_equal(_layout(service, handle, 0), first)


# -- the background: new checkpoints are laid out before anyone asks ----------------------------

def _wait_cached(service, handle, step, layer, method, timeout=60.0) -> np.ndarray:
    plan = service.plan(handle, handle.checkpoint(step), layer, method, "previous")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        layout = service.cached_layout(plan)
        if layout is not None:
            return layout
        time.sleep(0.1)
    raise AssertionError(f"layer {layer} ({method}) of step {step} was not laid out in the background")


def test_new_checkpoints_of_viewed_combos_and_the_defaults_are_laid_out_in_the_background(growing):
    handle, grow = growing
    last = handle.run.num_layers
    service = Projections(background=True, follow_defaults=[("last", "pca")], poll_s=0.1)
    try:
        viewed = _layout(service, handle, 1, layer=1)               # the user looks at layer 1
        grow(2)
        X = {layer: [_states(handle, s, layer) for s in (0, 1, 2)] for layer in (1, last)}
        mine = _wait_cached(service, handle, 2, 1, "pca")
        np.testing.assert_array_equal(mine, P.align_next(X[1][2], X[1][1], viewed, "pca"))
        default = _wait_cached(service, handle, 2, last, "pca")     # the configured default: never viewed
        np.testing.assert_array_equal(default, P.project_aligned(X[last], "pca", anchor=0)[2])
        deadline = time.monotonic() + 30                            # preservation too: a request is served at once
        while service.job_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        answer = service.request(handle, handle.checkpoint(2), 1, "pca", True)
        assert isinstance(answer, Result), answer
        never_viewed = service.request(handle, handle.checkpoint(2), 0, "pca", True)
        assert isinstance(never_viewed, Job)                        # layer 0 was neither viewed nor a default
    finally:
        service.shutdown()


def test_background_work_is_on_by_default_with_umap_of_the_last_layer_and_stops_with_the_app(growing):
    handle, _ = growing
    service = Projections()
    assert service.background and service.follow_defaults == [("last", "umap")]
    service.follow(handle)
    follower = service._follower
    assert follower is not None and follower.is_alive()
    if sys.platform.startswith("linux"):    # the training loop of a serve=True script keeps its pace
        deadline = time.monotonic() + 5
        while os.getpriority(os.PRIO_PROCESS, follower.native_id) != 19:
            assert time.monotonic() < deadline, "the follower thread does not run at the lowest priority"
            time.sleep(0.05)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) != 19     # only that thread
    service.shutdown()
    follower.join(timeout=5)
    assert not follower.is_alive()
    quiet = Projections(background=False)
    quiet.follow(handle)
    assert quiet._follower is None


def test_a_large_layout_says_it_was_fitted_on_a_sample_and_its_preservation_measured_on_one(growing, monkeypatch):
    """The thresholds lowered to this run's 24 examples: what a run of a million points goes through."""
    handle, _grow = growing
    monkeypatch.setitem(P.DEFAULT_MAX_FIT, "tsne", 12)
    monkeypatch.setattr(P, "PRESERVATION_EXACT_UP_TO", 12)
    monkeypatch.setattr(P, "PRESERVATION_SAMPLE", 8)
    service = Projections(background=False)
    deadline = time.monotonic() + 120
    while not isinstance(answer := service.request(handle, handle.checkpoint(1), LAYER, "tsne", False), Result):
        assert answer.status != "failed", answer.message
        assert time.monotonic() < deadline, answer.message
        time.sleep(0.05)
    assert answer.sampled
    body = np.frombuffer(answer.data, "<f4").reshape(answer.rows, 3)
    X = _states(handle, 1)
    expected_layout = P.project(X, "tsne", seed=0)
    np.testing.assert_array_equal(body[:, :2], expected_layout)
    expected = P.neighborhood_preservation(X, expected_layout, k=10)
    assert np.isfinite(body[:, 2]).sum() == 8
    np.testing.assert_array_equal(body[:, 2], expected)
    assert answer.mean_preservation == pytest.approx(float(np.nanmean(expected)))
