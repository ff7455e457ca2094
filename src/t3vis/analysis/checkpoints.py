"""Cross-checkpoint analytics: how predictions, difficulty, heads and saliency move in training.

Pure functions over arrays (none of this was in the T3-Vis paper):

- `prediction_flips`: per example, which consecutive checkpoints changed its prediction.
- `forgetting_events` / `forgetting_from_dynamics` (Toneva et al. 2019, "An Empirical Study
  of Example Forgetting during Deep Neural Network Learning"): over an ordered sequence of
  correctness observations of one example (its training passes, epochs or checkpoints), a
  forgetting event is a transition from correct at observation t to incorrect at t + 1.
  The count is the number of such transitions; an example never observed correct is
  "never learned" (Toneva et al. rank those as forgotten infinitely often: they carry the
  flag, and a count of 0); an example learned and never forgotten is "unforgettable".
  Learning events (incorrect -> correct) are not counted, and neither is starting wrong.
- `stack_importance`, `importance_ranks`, `most_moved_heads`: head importance (L, H) per
  checkpoint as one (C, L, H) array, and the heads whose rank moved most.
- `topk_overlap`: do two checkpoints find the same tokens of one example salient?
- Data-map regions from the dynamics: `summarize_dynamics` and `assign_regions` are
  t3vis.cartography's own, re-exposed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from t3vis.cartography import REGIONS, assign_regions, summarize_dynamics
from t3vis.errors import InvalidInputError

__all__ = ["REGIONS", "Forgetting", "PredictionFlips", "TopKOverlap", "assign_regions", "forgetting_events",
           "forgetting_from_dynamics", "importance_ranks", "most_moved_heads", "prediction_flips",
           "stack_importance", "summarize_dynamics", "topk_overlap"]


@dataclass(frozen=True, eq=False)
class PredictionFlips:
    changed: np.ndarray     # (C - 1, N) bool: prediction of example n differs between checkpoints i and i + 1
    counts: np.ndarray      # (N,) int64: flips of each example
    events: pd.DataFrame    # one row per flip: example, checkpoint (the later one), before, after[, kind]


def prediction_flips(predictions, labels=None) -> PredictionFlips:
    """predictions (C, N) class indices, checkpoints in order. With labels (N,), each flip has a
    kind: "learned" (wrong -> right), "forgotten" (right -> wrong) or "changed" (wrong -> wrong)."""
    preds = _as_matrix(predictions, "predictions", integer=True)
    changed = preds[1:] != preds[:-1]                                        # (C - 1, N)
    step, example = np.nonzero(changed)
    order = np.lexsort((step, example))                                      # by example, then checkpoint
    step, example = step[order], example[order]
    events = pd.DataFrame({"example": example.astype(np.int64), "checkpoint": (step + 1).astype(np.int64),
                           "before": preds[step, example], "after": preds[step + 1, example]})
    if labels is not None:
        gold = np.asarray(labels)
        if gold.shape != (preds.shape[1],):
            raise InvalidInputError(f"labels must be one per example ({preds.shape[1]}), not shape {gold.shape}")
        right_before = events["before"].to_numpy() == gold[example]
        right_after = events["after"].to_numpy() == gold[example]
        events["kind"] = np.where(right_after, "learned", np.where(right_before, "forgotten", "changed"))
    return PredictionFlips(changed, changed.sum(0).astype(np.int64), events)


@dataclass(frozen=True, eq=False)
class Forgetting:
    events: np.ndarray          # (N,) int64: correct -> incorrect transitions
    never_learned: np.ndarray   # (N,) bool: never observed correct
    first_learned: np.ndarray   # (N,) int64: index of the first correct observation, -1 if never

    @property
    def unforgettable(self) -> np.ndarray:
        """Learned at some point and never forgotten afterwards."""
        return ~self.never_learned & (self.events == 0)


def forgetting_events(correct) -> Forgetting:
    """correct (T, N): observation t of example n was classified right (bool, or a share >= 0.5)."""
    right = _as_matrix(correct, "correct", integer=False) >= 0.5
    events = (right[:-1] & ~right[1:]).sum(0).astype(np.int64)
    ever = np.asarray(right.any(0))                                 # (N,) bool
    first = np.where(ever, right.argmax(0), -1).astype(np.int64)
    return Forgetting(events, ~ever, first)


def forgetting_from_dynamics(observations: pd.DataFrame) -> pd.DataFrame:
    """Training dynamics rows (id, step or epoch, correct) -> id, forgetting_events, never_learned,
    unforgettable, observations. Each example's own observations are taken in training order,
    so examples seen a different number of times are fine."""
    order_by = "step" if "step" in observations.columns else "epoch"
    missing = {"id", "correct", order_by} - set(observations.columns)
    if missing:
        raise InvalidInputError(f"training dynamics need the columns id, correct and step or epoch; "
                                f"missing {sorted(missing)}")
    rows = observations.sort_values(["id", order_by], kind="stable")
    ids = rows["id"].to_numpy()
    right = rows["correct"].to_numpy(dtype=np.float64) >= 0.5
    same = np.r_[False, ids[1:] == ids[:-1]]                                  # row continues the previous id
    forgot = np.r_[False, right[:-1] & ~right[1:]] & same
    frame = pd.DataFrame({"id": ids, "forgot": forgot, "right": right})
    grouped = frame.groupby("id", sort=True)
    out = pd.DataFrame({"forgetting_events": grouped["forgot"].sum().astype(np.int64),
                        "never_learned": ~grouped["right"].any(),
                        "observations": grouped.size().astype(np.int64)}).reset_index()
    out.insert(3, "unforgettable", ~out["never_learned"] & (out["forgetting_events"] == 0))
    return out


def stack_importance(importances: Sequence) -> np.ndarray:
    """A sequence of (L, H) importance arrays, one per checkpoint in order -> (C, L, H) float32."""
    arrays = [np.asarray(a, dtype=np.float32) for a in importances]
    if not arrays:
        raise InvalidInputError("no head importance to stack: give one (layers, heads) array per checkpoint")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 2:
        raise InvalidInputError(f"every checkpoint's importance must be the same (layers, heads) shape; "
                                f"got {sorted(shapes)}")
    return np.stack(arrays)


def importance_ranks(stack) -> np.ndarray:
    """(C, L, H) -> (C, L, H) int64 rank of each head among all heads of its checkpoint; 1 = most important.
    Ties keep layer-then-head order."""
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise InvalidInputError(f"importance stack must be (checkpoints, layers, heads), not shape {stack.shape}")
    flat = stack.reshape(stack.shape[0], -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, flat.shape[1] + 1)[None, :].repeat(len(flat), 0), axis=1)
    return ranks.reshape(stack.shape).astype(np.int64)


def most_moved_heads(stack, *, k: int = 10, first: int = 0, last: int = -1) -> pd.DataFrame:
    """The k heads whose rank moved most between checkpoints `first` and `last` (indices into the stack):
    layer, head, importance_first, importance_last, rank_first, rank_last, rise (rank_first - rank_last:
    positive when the head became more important), largest |rise| first."""
    stack = stack_importance(list(np.asarray(stack)))
    C, L, H = stack.shape
    for name, index in (("first", first), ("last", last)):
        if not -C <= index < C:
            raise InvalidInputError(f"checkpoint index {name}={index} is out of range for {C} checkpoints")
    ranks = importance_ranks(stack)
    layer, head = np.divmod(np.arange(L * H), H)
    table = pd.DataFrame({"layer": layer, "head": head,
                          "importance_first": stack[first].ravel(), "importance_last": stack[last].ravel(),
                          "rank_first": ranks[first].ravel(), "rank_last": ranks[last].ravel()})
    table["rise"] = table["rank_first"] - table["rank_last"]
    moved = table.assign(_by=table["rise"].abs()).sort_values(["_by", "layer", "head"], ascending=[False, True, True],
                                                              kind="stable")
    return moved.drop(columns="_by").head(max(int(k), 0)).reset_index(drop=True)


@dataclass(frozen=True, eq=False)
class TopKOverlap:
    k: int                  # the k used: the one asked for, at most the number of tokens
    top_a: np.ndarray       # token positions of the top k under scores_a, most salient first
    top_b: np.ndarray
    common: np.ndarray      # positions in both, ascending
    jaccard: float          # |A & B| / |A | B|
    share: float            # |A & B| / k


def topk_overlap(scores_a, scores_b, k: int = 5, *, by: str = "abs") -> TopKOverlap:
    """Overlap of the k most salient tokens of one example under two checkpoints' scores over the
    same tokens. by="abs" ranks by magnitude (either sign is salient), by="value" by signed score
    (evidence for the target class only). Ties keep token order."""
    a, b = (np.asarray(s, dtype=np.float64) for s in (scores_a, scores_b))
    if a.ndim != 1 or a.shape != b.shape or len(a) == 0:
        raise InvalidInputError(f"scores must be two non-empty 1-D arrays over the same tokens; got shapes "
                                f"{a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InvalidInputError("saliency scores contain NaN or infinity; recompute them before comparing")
    if by not in ("abs", "value"):
        raise InvalidInputError(f"unknown ranking {by!r}; choose 'abs' or 'value'")
    if int(k) < 1:
        raise InvalidInputError(f"k must be at least 1, not {k}")
    k = min(int(k), len(a))
    key = np.abs if by == "abs" else (lambda x: x)
    top_a = np.argsort(-key(a), kind="stable")[:k]
    top_b = np.argsort(-key(b), kind="stable")[:k]
    common = np.intersect1d(top_a, top_b)
    union = np.union1d(top_a, top_b)
    return TopKOverlap(k, top_a, top_b, common, len(common) / len(union), len(common) / k)


def _as_matrix(values, name: str, *, integer: bool) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidInputError(f"{name} must be (observations, examples) with at least one of each, "
                                f"not shape {array.shape}")
    if integer and not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)):
        raise InvalidInputError(f"{name} must be class indices; take probs.argmax(-1) of probabilities first")
    if not integer and not np.isfinite(array.astype(np.float64)).all():
        raise InvalidInputError(f"{name} contains NaN; fill missing observations before counting")
    return array if integer else array.astype(np.float64)
