"""What one Recorder.observe() call records, and the checks of its epoch and step (the checks of
its logits and labels are the task's: t3vis.tasks.arguments)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from t3vis.errors import InvalidInputError


@dataclass
class Observation:
    """One observe() call, kept on the device until the next flush."""

    ids: torch.Tensor
    gold: torch.Tensor             # gold-class probability, or mean target-token probability
    correct: torch.Tensor          # bool, or a generative row's token accuracy
    out_of_range: torch.Tensor     # a 0-d bool: a label outside the classes (checked at flush on accelerators)
    epoch: int | None
    step: int

    def frame(self) -> pd.DataFrame | None:
        """id, epoch (-1: to be counted), step, gold_prob, correct of the rows with an id and something
        scored (a generative row without target tokens has a NaN gold_prob); None if refused."""
        if bool(self.out_of_range):
            return None
        ids = self.ids.cpu().numpy().astype(np.int64)
        frame = pd.DataFrame({"id": ids, "epoch": -1 if self.epoch is None else self.epoch, "step": self.step,
                              "gold_prob": self.gold.cpu().numpy(), "correct": self.correct.cpu().numpy()})
        keep = (frame["id"] >= 0) & frame["gold_prob"].notna()   # id -1: a batch row no id was found for
        return frame[keep].reset_index(drop=True)


# A fractional epoch this close below a whole number counts as that number (float sums of 1/steps).
_EPOCH_TOLERANCE = 1e-9


def whole_epoch(epoch) -> int:
    """The whole epoch an observation belongs to: floor of the progress at the start of its step."""
    if isinstance(epoch, bool) or not isinstance(epoch, (int, float, np.integer, np.floating)) \
            or not np.isfinite(epoch) or epoch < 0:
        raise InvalidInputError(f"epoch={epoch!r}: give the training progress at the start of the step, "
                                "a number >= 0 (e.g. 1, or 1.25 a quarter into the second epoch)")
    return int(np.floor(float(epoch) + _EPOCH_TOLERANCE))


def checked_step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise InvalidInputError(f"step={step!r}: give the training step as an integer >= 0")
    return int(step)
