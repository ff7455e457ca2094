"""Training dynamics per example (Swayamdipta et al. 2020, "Dataset Cartography").

Pure arithmetic shared by the store (run.dynamics()) and the analyses: a foundation module,
like errors and models, that belongs to no stage of the data flow.

Confidence is the mean gold-label probability over epochs, variability its standard
deviation, correctness the share of epochs predicted right. Regions of the data map:
`ambiguous` for the most variable third; of the rest, `easy-to-learn` at confidence
>= 0.5 and `hard-to-learn` below it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REGIONS = ("easy-to-learn", "ambiguous", "hard-to-learn")


def summarize_dynamics(observations: pd.DataFrame, *, variability_quantile: float = 2 / 3,
                       confidence_threshold: float = 0.5) -> pd.DataFrame:
    """observations: id, epoch, gold_prob, correct -> id, confidence, variability, correctness, epochs, region."""
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
                                       variability_quantile=variability_quantile,
                                       confidence_threshold=confidence_threshold)
    return summary


def assign_regions(confidence: np.ndarray, variability: np.ndarray, *, variability_quantile: float = 2 / 3,
                   confidence_threshold: float = 0.5) -> np.ndarray:
    cut = np.quantile(variability, variability_quantile) if len(variability) else 0.0
    ambiguous = (variability > cut) & (variability > 0)
    region = np.where(confidence >= confidence_threshold, REGIONS[0], REGIONS[2]).astype(object)
    region[ambiguous] = REGIONS[1]
    return region
