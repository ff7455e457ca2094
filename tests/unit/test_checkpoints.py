"""Cross-checkpoint analytics against answers computed by hand."""

import numpy as np
import pandas as pd
import pytest

from t3vis import cartography
from t3vis.analysis import checkpoints as ck
from t3vis.errors import InvalidInputError


def test_prediction_flips_by_hand():
    # checkpoints x examples
    preds = np.array([[0, 1, 2, 1],
                      [1, 1, 2, 0],
                      [0, 1, 1, 0]])
    flips = ck.prediction_flips(preds, labels=[0, 1, 2, 0])
    assert flips.changed.tolist() == [[True, False, False, True], [True, False, True, False]]
    assert flips.counts.tolist() == [2, 0, 1, 1]
    assert flips.events[["example", "checkpoint", "before", "after"]].values.tolist() == [
        [0, 1, 0, 1], [0, 2, 1, 0], [2, 2, 2, 1], [3, 1, 1, 0]]
    assert flips.events["kind"].tolist() == ["forgotten", "learned", "forgotten", "learned"]


def test_prediction_flips_changed_kind_and_no_labels():
    flips = ck.prediction_flips([[1, 0], [2, 0]], labels=[0, 0])
    assert flips.events["kind"].tolist() == ["changed"]          # wrong -> another wrong class
    assert "kind" not in ck.prediction_flips([[1, 0], [2, 0]]).events.columns


def test_prediction_flips_refuses_probabilities():
    with pytest.raises(InvalidInputError, match="argmax"):
        ck.prediction_flips(np.full((2, 3), 0.5))


def test_forgetting_events_by_hand():
    # observations x examples: learned-forgotten-learned-forgotten, never learned, unforgettable,
    # learned late and never forgotten, wrong -> right -> wrong
    correct = np.array([[1, 0, 1, 0, 0],
                        [0, 0, 1, 0, 1],
                        [1, 0, 1, 1, 0],
                        [0, 0, 1, 1, 0]], dtype=bool)
    f = ck.forgetting_events(correct)
    assert f.events.tolist() == [2, 0, 0, 0, 1]
    assert f.never_learned.tolist() == [False, True, False, False, False]
    assert f.first_learned.tolist() == [0, -1, 0, 2, 1]
    assert f.unforgettable.tolist() == [False, False, True, True, False]


def test_forgetting_from_dynamics_uses_each_examples_own_order():
    obs = pd.DataFrame({"id": [7, 7, 7, 3, 3, 9],
                        "step": [30, 10, 20, 10, 20, 10],
                        "correct": [False, True, True, True, False, False]})
    out = ck.forgetting_from_dynamics(obs)
    assert out["id"].tolist() == [3, 7, 9]
    # id 7 in step order: right, right, wrong -> one event; id 3: right, wrong -> one; 9 never right
    assert out["forgetting_events"].tolist() == [1, 1, 0]
    assert out["never_learned"].tolist() == [False, False, True]
    assert out["unforgettable"].tolist() == [False, False, False]
    assert out["observations"].tolist() == [2, 3, 1]
    # no event across two examples: sorted by id, 7's last (right) is followed by 9's only (wrong)
    assert ck.forgetting_from_dynamics(obs.assign(correct=[True] * 5 + [False]))["forgetting_events"].sum() == 0


def test_forgetting_from_dynamics_names_missing_columns():
    with pytest.raises(InvalidInputError, match="missing"):
        ck.forgetting_from_dynamics(pd.DataFrame({"id": [1], "epoch": [0]}))


def test_importance_stack_ranks_and_most_moved():
    first = np.array([[0.9, 0.1], [0.5, 0.3]])
    last = np.array([[0.2, 0.8], [0.5, 0.3]])
    stack = ck.stack_importance([first, last])
    assert stack.shape == (2, 2, 2) and stack.dtype == np.float32
    ranks = ck.importance_ranks(stack)
    assert ranks[0].tolist() == [[1, 4], [2, 3]]
    assert ranks[1].tolist() == [[4, 1], [2, 3]]
    moved = ck.most_moved_heads(stack, k=3)
    assert moved[["layer", "head", "rise"]].values.tolist() == [[0, 0, -3], [0, 1, 3], [1, 0, 0]]
    assert moved["importance_last"].tolist() == pytest.approx([0.2, 0.8, 0.5])


def test_importance_stack_refuses_mismatched_shapes():
    with pytest.raises(InvalidInputError, match="same"):
        ck.stack_importance([np.ones((2, 3)), np.ones((3, 2))])
    with pytest.raises(InvalidInputError, match="out of range"):
        ck.most_moved_heads(np.ones((2, 2, 2)), first=5)


def test_topk_overlap_by_hand():
    a = [0.9, -0.8, 0.1, 0.05, 0.7]
    b = [0.1, -0.95, 0.85, 0.0, 0.6]
    r = ck.topk_overlap(a, b, k=3)                   # by magnitude: {0, 1, 4} and {1, 2, 4}
    assert r.top_a.tolist() == [0, 1, 4] and r.top_b.tolist() == [1, 2, 4]
    assert r.common.tolist() == [1, 4]
    assert r.jaccard == pytest.approx(2 / 4) and r.share == pytest.approx(2 / 3)
    signed = ck.topk_overlap(a, b, k=2, by="value")  # {0, 4} and {2, 4}
    assert signed.common.tolist() == [4] and signed.jaccard == pytest.approx(1 / 3)


def test_topk_overlap_bounds_k_by_the_token_count():
    r = ck.topk_overlap([1.0, 2.0], [2.0, 1.0], k=10)
    assert r.k == 2 and r.jaccard == 1.0 and r.share == 1.0
    with pytest.raises(InvalidInputError, match="at least 1"):
        ck.topk_overlap([1.0], [1.0], k=0)
    with pytest.raises(InvalidInputError, match="same tokens"):
        ck.topk_overlap([1.0, 2.0], [1.0], k=1)
    with pytest.raises(InvalidInputError, match="NaN"):
        ck.topk_overlap([np.nan], [1.0], k=1)


def test_data_map_functions_are_cartographys_own():
    assert ck.summarize_dynamics is cartography.summarize_dynamics
    assert ck.assign_regions is cartography.assign_regions
    regions = ck.assign_regions(np.array([0.9, 0.2, 0.6]), np.array([0.0, 0.0, 0.3]))
    assert regions.tolist() == ["easy-to-learn", "hard-to-learn", "ambiguous"]
