"""Training dynamics per example (Swayamdipta et al. 2020, "Dataset Cartography").

Pure arithmetic shared by the store (run.dynamics()) and the analyses: a foundation module,
like errors and models, that belongs to no stage of the data flow.

Confidence is the mean gold-label probability over epochs, variability its standard
deviation, correctness the share of epochs predicted right.

Regions of the data map (`RegionRule`): `ambiguous` for the most variable third; of the rest,
`easy-to-learn` at confidence >= 1/K and `hard-to-learn` below it, K the number of classes.

Why chance (1/K) and not the paper's fixed 0.5: a prediction is the arg-max, so an example
predicted right has a gold-label probability of at least 1/K (the gold class beats the K - 1
others, which share the rest). With 0.5 an example of a 3-class task predicted right in
every epoch at probability 0.45 was "hard-to-learn"; at 1/K it cannot be, and below 1/K the
model puts less on the gold label than a uniform guess would. For K = 2 the threshold is 0.5,
so binary runs keep the paper's regions exactly. The paper's code picks regions by quantiles
instead; that names a fixed third of any data set "hard", however well it is learned, so the
quantile is kept for variability only (which has no absolute scale) and confidence has a fixed
meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

REGIONS = ("easy-to-learn", "ambiguous", "hard-to-learn")
DEFAULT_VARIABILITY_QUANTILE = 2 / 3


def chance_confidence(num_classes: int) -> float:
    """1/K: the gold-label probability of a uniform guess, and the least an arg-max-right prediction has."""
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive whole number of classes; got {num_classes!r}")
    return 1.0 / int(num_classes)


@dataclass(frozen=True)
class RegionRule:
    """The thresholds that split a data map into regions, with the numbers they came from."""

    num_classes: int
    confidence_threshold: float      # easy-to-learn at >=, hard-to-learn below (1/K unless given)
    variability_quantile: float      # the quantile of variability above which an example is ambiguous
    variability_cut: float           # that quantile's value on this data map

    def regions(self, confidence: np.ndarray, variability: np.ndarray) -> np.ndarray:
        """Region name per example (object array)."""
        confidence, variability = np.asarray(confidence), np.asarray(variability)
        ambiguous = (variability > self.variability_cut) & (variability > 0)
        region = np.where(confidence >= self.confidence_threshold, REGIONS[0], REGIONS[2]).astype(object)
        region[ambiguous] = REGIONS[1]
        return region

    def describe(self) -> dict[str, str]:
        """Each region's rule in words, with its numbers (what a legend shows)."""
        t, why = f"{self.confidence_threshold:.2f}", self._threshold_reason()
        return {REGIONS[0]: f"confidence ≥ {t}{why}", REGIONS[2]: f"confidence < {t}{why}",
                REGIONS[1]: f"variability > {self.variability_cut:.3f} "
                            f"(top {1 - self.variability_quantile:.0%})"}

    def _threshold_reason(self) -> str:
        if self.confidence_threshold == chance_confidence(self.num_classes):
            return f" (= 1/{self.num_classes} classes)"
        return ""


def region_rule(variability: np.ndarray, *, num_classes: int = 2,
                variability_quantile: float = DEFAULT_VARIABILITY_QUANTILE,
                confidence_threshold: float | None = None) -> RegionRule:
    """The rule for a data map with these variabilities: confidence threshold 1/num_classes unless
    given; the variability cut is the quantile of this map's variability (0 for an empty map)."""
    threshold = chance_confidence(num_classes) if confidence_threshold is None else float(confidence_threshold)
    variability = np.asarray(variability, dtype=np.float64)
    cut = float(np.quantile(variability, variability_quantile)) if len(variability) else 0.0
    return RegionRule(num_classes=int(num_classes), confidence_threshold=threshold,
                      variability_quantile=float(variability_quantile), variability_cut=cut)


def summarize_dynamics(observations: pd.DataFrame, *, num_classes: int = 2,
                       variability_quantile: float = DEFAULT_VARIABILITY_QUANTILE,
                       confidence_threshold: float | None = None) -> pd.DataFrame:
    """observations: id, epoch, gold_prob, correct -> id, confidence, variability, correctness, epochs, region.

    num_classes: the task's number of classes K (a run's len(label_names)); regions split at 1/K."""
    if observations.empty:
        return pd.DataFrame({"id": pd.Series(dtype="int64"), "confidence": pd.Series(dtype="float64"),
                             "variability": pd.Series(dtype="float64"), "correctness": pd.Series(dtype="float64"),
                             "epochs": pd.Series(dtype="int64"), "region": pd.Series(dtype="str")})
    # one value per (id, epoch): an example seen twice in an epoch counts once, averaged
    per_epoch = (observations.groupby(["id", "epoch"], sort=True)
                 .agg(gold_prob=("gold_prob", "mean"), correct=("correct", "mean")))
    grouped = per_epoch.groupby(level="id")
    summary = pd.DataFrame({
        "confidence": grouped["gold_prob"].mean(),
        "variability": grouped["gold_prob"].std(ddof=0),
        "correctness": grouped["correct"].mean(),
        "epochs": grouped.size(),
    }).reset_index()
    summary["region"] = assign_regions(summary["confidence"].to_numpy(), summary["variability"].to_numpy(),
                                       num_classes=num_classes, variability_quantile=variability_quantile,
                                       confidence_threshold=confidence_threshold)
    return summary


def assign_regions(confidence: np.ndarray, variability: np.ndarray, *, num_classes: int = 2,
                   variability_quantile: float = DEFAULT_VARIABILITY_QUANTILE,
                   confidence_threshold: float | None = None) -> np.ndarray:
    """Region name per example, by `region_rule` (confidence threshold 1/num_classes unless given)."""
    rule = region_rule(variability, num_classes=num_classes, variability_quantile=variability_quantile,
                       confidence_threshold=confidence_threshold)
    return rule.regions(confidence, variability)
