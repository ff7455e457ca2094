"""Data-map regions that fit the task: the confidence threshold is chance, 1/K for K classes.

Every expected value here is worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import t3vis
from t3vis.cartography import assign_regions, chance_confidence, region_rule, summarize_dynamics
from t3vis.store import schema
from t3vis.store.writer import RunWriter

EASY, AMBIGUOUS, HARD = "easy-to-learn", "ambiguous", "hard-to-learn"


def observations(rows) -> pd.DataFrame:
    """rows: (id, epoch, gold_prob, correct)."""
    return pd.DataFrame({"id": [r[0] for r in rows], "epoch": [r[1] for r in rows],
                         "step": np.arange(len(rows)), "gold_prob": [r[2] for r in rows],
                         "correct": [r[3] for r in rows]})


# id 1: right in every epoch at 0.45 (e.g. probabilities 0.45 / 0.35 / 0.20): confidence 0.45, variability 0
# id 2: wrong at 0.30 in every epoch: confidence 0.30, variability 0
# id 3: 0.2, 0.6, 1.0: confidence 0.6, variability sqrt((0.16 + 0 + 0.16) / 3) = 0.3266
# id 4: right at 0.5 in every epoch: confidence 0.5, variability 0
# Variabilities [0, 0, 0.3266, 0]: their 2/3 quantile is the sorted value at position 3 * 2/3 = 2,
# which is 0; only id 3 lies above it.
THREE_CLASS = [(1, e, 0.45, True) for e in range(3)] + [(2, e, 0.30, False) for e in range(3)] + \
    [(3, 0, 0.2, False), (3, 1, 0.6, True), (3, 2, 1.0, True)] + [(4, e, 0.5, True) for e in range(3)]


def regions_of(summary: pd.DataFrame) -> dict[int, str]:
    return dict(zip(summary["id"].astype(int), summary["region"]))


def test_three_classes_right_every_epoch_at_045_is_not_hard_to_learn():
    summary = summarize_dynamics(observations(THREE_CLASS), num_classes=3)
    # threshold 1/3: 0.45 and 0.5 are easy, 0.30 is hard, the variable one ambiguous
    assert regions_of(summary) == {1: EASY, 2: HARD, 3: AMBIGUOUS, 4: EASY}
    assert summary.loc[summary["id"] == 3, "variability"].item() == pytest.approx(np.sqrt(0.32 / 3))


def test_binary_runs_keep_the_papers_regions():
    # K = 2: threshold 0.5, as before; the same data names 0.45 hard-to-learn
    binary = {1: HARD, 2: HARD, 3: AMBIGUOUS, 4: EASY}
    assert regions_of(summarize_dynamics(observations(THREE_CLASS), num_classes=2)) == binary
    assert regions_of(summarize_dynamics(observations(THREE_CLASS))) == binary          # the default is binary
    assert regions_of(summarize_dynamics(observations(THREE_CLASS), confidence_threshold=0.5)) == binary


@pytest.mark.parametrize("classes, threshold", [(2, 0.5), (3, 1 / 3), (4, 0.25), (10, 0.1)])
def test_the_threshold_is_exact_chance(classes, threshold):
    assert chance_confidence(classes) == threshold
    below = np.nextafter(threshold, 0.0)
    regions = assign_regions(np.array([threshold, below, 1.0, 0.0]), np.zeros(4), num_classes=classes)
    assert regions.tolist() == [EASY, HARD, EASY, HARD]          # at 1/K: easy; a hair below: hard


def test_the_variability_cut_is_strict():
    # variabilities 0.1, 0.2, 0.3, 0.4: the 2/3 quantile sits at position 3 * 2/3 = 2, the value 0.3;
    # only 0.4 lies above it (0.3 itself is not ambiguous)
    variability = np.array([0.1, 0.2, 0.3, 0.4])
    rule = region_rule(variability, num_classes=3)
    assert rule.variability_cut == pytest.approx(0.3)
    assert assign_regions(np.full(4, 0.9), variability, num_classes=3).tolist() == [EASY, EASY, EASY, AMBIGUOUS]


def test_right_in_every_epoch_is_never_hard_to_learn():
    # an arg-max-right prediction puts at least 1/K on the gold label, whatever K and the logits
    rng = np.random.default_rng(0)
    for classes in (3, 4, 5, 7):
        rows = []
        for example in range(40):
            for epoch in range(4):
                logits = rng.normal(size=classes)
                logits[0] = logits.max() + rng.uniform(0.0, 0.05)        # gold class 0 wins, often narrowly
                probs = np.exp(logits) / np.exp(logits).sum()
                rows.append((example, epoch, float(probs[0]), True))
        summary = summarize_dynamics(observations(rows), num_classes=classes)
        assert HARD not in set(summary["region"]), classes
        assert (summary["confidence"] >= 1 / classes).all()


def test_the_rule_says_its_numbers():
    rule = region_rule(np.array([0.1, 0.2, 0.3, 0.4]), num_classes=3)
    words = rule.describe()
    assert words[HARD] == "confidence < 0.33 (= 1/3 classes)"
    assert words[EASY] == "confidence ≥ 0.33 (= 1/3 classes)"
    assert words[AMBIGUOUS] == "variability > 0.300 (top 33%)"
    # a threshold the caller set is not called chance
    assert region_rule(np.zeros(2), num_classes=3, confidence_threshold=0.6).describe()[HARD] == "confidence < 0.60"
    assert region_rule(np.zeros(0), num_classes=2).variability_cut == 0.0          # an empty map


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_a_bad_class_count_is_refused(bad):
    with pytest.raises(ValueError, match="num_classes"):
        chance_confidence(bad)


def test_run_dynamics_splits_at_one_over_the_runs_classes(tmp_path):
    # a 3-class run: Run.dynamics() passes K = len(label_names) = 3
    meta = {"t3vis_version": "test", "model": {"name_or_path": "hand-made"}, "task": "sequence-classification",
            "label_names": ["neg", "neu", "pos"], "num_layers": 1, "num_heads": 1, "hidden_size": 4,
            "pooling": "cls", "max_length": 16, "thumbnail_size": 2, "num_probe": 0}
    examples = pd.DataFrame({"id": [1, 2, 3, 4], "split": "train", "text": ["a", "b", "c", "d"],
                             "label": [0, 1, 2, 0], "probe_row": -1})
    writer = RunWriter.create(tmp_path / "run", meta, examples)
    writer.append_dynamics(observations(THREE_CLASS))
    run = t3vis.open_run(tmp_path / "run")
    assert (tmp_path / "run" / schema.DYNAMICS_DIR).is_dir()
    assert regions_of(run.dynamics()) == {1: EASY, 2: HARD, 3: AMBIGUOUS, 4: EASY}
    # an explicit option still wins
    assert regions_of(run.dynamics(num_classes=2)) == {1: HARD, 2: HARD, 3: AMBIGUOUS, 4: EASY}
