"""Pruning's two answers (docs/api.md "Pruning"): an estimate from a seeded random sample of
PRUNE_SAMPLE examples with 95% intervals, at once, and the exact figures, equal to t3vis.evaluate's.

A tiny random BERT classifier recorded with 300 probe examples (more than the sample), and a
tiny T5 seq2seq run (a generative run answers an estimate request exactly).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_generative_model, make_pairs
from fastapi.testclient import TestClient
from scipy import stats
from server_fixtures import record_pruning_run

import t3vis
from t3vis.server import create_app
from t3vis.server.models import PRUNE_SAMPLE

pytestmark = pytest.mark.integration

N_PROBE = 300
MASKS = ([[0, 1], [1, 2]], [[0, 0]], [[1, 0], [1, 3]], [[0, 2], [0, 3], [1, 1]], [[0, 0], [0, 1], [1, 0], [1, 1]])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("prune") / "many"
    texts, labels = record_pruning_run(path, N_PROBE)
    run = t3vis.open_run(path)
    model, tokenizer = run.checkpoint(0).load_model()
    return path, model, tokenizer, texts, np.asarray(labels)


@pytest.fixture
def client(recorded):
    with TestClient(create_app([recorded[0]], model_cache=1)) as c:
        yield c


def _prune(client, **body):
    r = client.post("/api/runs/many/checkpoints/0/prune", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _as_mask(pairs):
    mask: dict[int, list[int]] = {}
    for layer, head in pairs:
        mask.setdefault(layer, []).append(head)
    return mask


def _sample_rows(n, seed=0):
    """The documented draw: numpy.random.default_rng(seed).choice(n, PRUNE_SAMPLE, replace=False), in row order."""
    return np.sort(np.random.default_rng(seed).choice(n, PRUNE_SAMPLE, replace=False))


def _wilson_fpc(k, n, population):
    z = stats.norm.ppf(0.975)
    fpc = (population - n) / (population - 1)
    m, p = n / fpc, k / n
    centre = (p + z * z / (2 * m)) / (1 + z * z / m)
    half = z / (1 + z * z / m) * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m))
    return centre - half, centre + half


def _mean_interval_fpc(values, population):
    n = len(values)
    scale = stats.sem(values) * math.sqrt((population - n) / (population - 1))
    return stats.t.interval(0.95, n - 1, loc=np.mean(values), scale=scale)


def test_the_estimate_is_the_documented_seeded_sample_computed_by_hand(client, recorded):
    _, model, tokenizer, texts, labels = recorded
    masked = MASKS[0]
    estimate = _prune(client, masked_heads=masked, estimate=True)
    assert (estimate["exact"], estimate["sample"], estimate["n"]) == (False, PRUNE_SAMPLE, N_PROBE)
    assert _prune(client, masked_heads=masked, estimate=True) == estimate          # same request, same sample

    rows = _sample_rows(N_PROBE)
    sampled_texts, sampled_labels = [texts[i] for i in rows], labels[rows]
    after = t3vis.evaluate(model, tokenizer, sampled_texts, sampled_labels, masked_heads=_as_mask(masked))
    before = t3vis.evaluate(model, tokenizer, sampled_texts, sampled_labels)
    for measured, got in ((after, estimate["after"]), (before, estimate["before"])):
        correct = int((measured.predictions == sampled_labels).sum())
        assert got["accuracy"] == pytest.approx(correct / PRUNE_SAMPLE, abs=1e-9)
        low, high = _wilson_fpc(correct, PRUNE_SAMPLE, N_PROBE)
        assert (got["accuracy_interval"]["low"], got["accuracy_interval"]["high"]) == pytest.approx((low, high),
                                                                                                  abs=1e-9)
        assert got["loss"] == pytest.approx(measured.loss, abs=1e-6)
        low, high = _mean_interval_fpc(measured.losses.astype(np.float64), N_PROBE)
        assert (got["loss_interval"]["low"], got["loss_interval"]["high"]) == pytest.approx((low, high), abs=1e-6)
    flipped = np.flatnonzero(before.predictions != after.predictions)
    assert [f["id"] for f in estimate["flips"]] == rows[flipped].tolist()      # the ids are 0..N-1 in probe order
    assert estimate["flipped"] == pytest.approx(N_PROBE * len(flipped) / PRUNE_SAMPLE)
    other = _prune(client, masked_heads=masked, estimate=True, seed=1)
    assert other["after"]["loss"] != estimate["after"]["loss"]                   # another seed, another sample


def test_exact_figures_equal_evaluate_and_the_estimates_intervals_contain_them(client, recorded):
    _, model, tokenizer, texts, labels = recorded
    before = t3vis.evaluate(model, tokenizer, texts, labels)
    for masked in MASKS:
        estimate = _prune(client, masked_heads=masked, estimate=True)
        exact = _prune(client, masked_heads=masked)
        after = t3vis.evaluate(model, tokenizer, texts, labels, masked_heads=_as_mask(masked))
        assert (exact["exact"], exact["sample"], exact["n"]) == (True, N_PROBE, N_PROBE)
        assert exact["after"]["accuracy"] == pytest.approx(after.accuracy, abs=1e-6)
        assert exact["after"]["loss"] == pytest.approx(after.loss, abs=1e-6)
        assert exact["before"]["accuracy"] == pytest.approx(before.accuracy, abs=1e-6)
        assert exact["before"]["loss"] == pytest.approx(before.loss, abs=1e-6)
        assert exact["after"]["accuracy_interval"] is None and exact["flipped_interval"] is None
        flips = np.flatnonzero(before.predictions != after.predictions)
        assert [f["id"] for f in exact["flips"]] == flips.tolist() and exact["flipped"] == len(flips)
        got = estimate["after"]
        assert got["accuracy_interval"]["low"] <= after.accuracy <= got["accuracy_interval"]["high"], masked
        assert got["loss_interval"]["low"] <= after.loss <= got["loss_interval"]["high"], masked
        assert estimate["flipped_interval"]["low"] <= len(flips) <= estimate["flipped_interval"]["high"], masked
        assert got["accuracy_interval"]["high"] - got["accuracy_interval"]["low"] < 0.2      # it says something


def test_an_estimate_after_the_exact_figures_takes_the_cached_baseline_as_it_is(client, recorded):
    _, model, tokenizer, texts, labels = recorded
    _prune(client, masked_heads=MASKS[1])                                       # caches the unmasked figures
    estimate = _prune(client, masked_heads=MASKS[2], estimate=True)
    before = t3vis.evaluate(model, tokenizer, texts, labels)
    assert estimate["exact"] is False
    assert estimate["before"]["accuracy"] == pytest.approx(before.accuracy, abs=1e-6)
    assert estimate["before"]["loss"] == pytest.approx(before.loss, abs=1e-6)
    assert estimate["before"]["accuracy_interval"] is None and estimate["after"]["accuracy_interval"] is not None


def test_a_selection_is_sampled_in_its_order_and_a_small_one_answers_exactly(client, recorded):
    _, model, tokenizer, texts, labels = recorded
    ids = list(range(N_PROBE - 1, 49, -1))                                     # 250 ids, in reverse
    estimate = _prune(client, masked_heads=MASKS[0], ids=ids, estimate=True)
    chosen = np.asarray(ids)[_sample_rows(len(ids))]
    after = t3vis.evaluate(model, tokenizer, [texts[i] for i in chosen], labels[chosen],
                           masked_heads=_as_mask(MASKS[0]))
    assert (estimate["n"], estimate["sample"]) == (len(ids), PRUNE_SAMPLE)
    assert estimate["after"]["loss"] == pytest.approx(after.loss, abs=1e-6)
    small = ids[:PRUNE_SAMPLE]
    answer = _prune(client, masked_heads=MASKS[0], ids=small, estimate=True)
    exact = t3vis.evaluate(model, tokenizer, [texts[i] for i in small], labels[small],
                           masked_heads=_as_mask(MASKS[0]))
    assert (answer["exact"], answer["sample"]) == (True, PRUNE_SAMPLE)
    assert answer["after"]["loss"] == pytest.approx(exact.loss, abs=1e-6)


def test_a_generative_run_answers_an_estimate_request_exactly(tmp_path):
    model, tokenizer = make_generative_model("t5")
    sources, targets = make_pairs(10)
    path = tmp_path / "gen"
    rec = t3vis.Recorder(path, model, tokenizer, sources, targets=targets, task="seq2seq")
    rec.snapshot(step=0, epoch=0.0)
    rec.close()
    model, tokenizer = t3vis.open_run(path).checkpoint(0).load_model()
    masked = {"decoder": [[0, 1]], "cross": [[1, 0]]}
    with TestClient(create_app([path], model_cache=1)) as c:
        r = c.post("/api/runs/gen/checkpoints/0/prune", json={"masked_heads": masked, "estimate": True,
                                                             "max_new_tokens": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    after = t3vis.evaluate(model, tokenizer, sources, masked_heads={"decoder": {0: [1]}, "cross": {1: [0]}},
                           task="seq2seq", targets=targets)
    assert body["exact"] is True and body["n"] == 10 and len(body["generations"]) == 10
    assert body["after"]["loss"] == pytest.approx(after.loss, abs=1e-6)
    assert body["after"]["token_accuracy"] == pytest.approx(after.token_accuracy, abs=1e-6)
