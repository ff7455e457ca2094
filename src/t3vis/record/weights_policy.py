"""Which checkpoints keep their model weights on disk: the Recorder's keep_weights policy."""

from __future__ import annotations

from dataclasses import dataclass

from t3vis.errors import InvalidInputError


@dataclass(frozen=True)
class WeightsPolicy:
    """Which checkpoints keep their weights in the run, written as one of:

    "all"      every checkpoint (the model's safetensors and tokenizer each: 92 MB for all-MiniLM-L6-v2);
    "none"     no checkpoint (probe results only: saliency, attention and pruning are unavailable);
    "every:K"  the checkpoints whose index (0-based, in step order, of the run's checkpoints) is a
               multiple of K, and always the latest, so the newest checkpoint can be inspected;
    "last:N"   the latest N checkpoints.

    Under "every" and "last", a new snapshot deletes the weights the run saved with checkpoints
    that no longer qualify; weights referenced elsewhere (a Trainer's checkpoint-<step>) are never
    deleted. "all" and "none" delete nothing.
    """

    kind: str          # "all", "none", "every" or "last"
    count: int = 0     # K or N

    @classmethod
    def parse(cls, text: str | WeightsPolicy) -> WeightsPolicy:
        if isinstance(text, WeightsPolicy):
            return text
        if isinstance(text, str) and text in ("all", "none"):
            return cls(text)
        kind, _, number = text.partition(":") if isinstance(text, str) else ("", "", "")
        if kind in ("every", "last") and number.isdigit() and int(number) >= 1:
            return cls(kind, int(number))
        raise InvalidInputError(f"keep_weights={text!r} is not a weights policy; give 'all', 'none', "
                                "'every:K' (every K-th checkpoint and the latest, K >= 1) or 'last:N' "
                                "(the latest N checkpoints, N >= 1), e.g. keep_weights='last:2'")

    def keeps(self, index: int, total: int) -> bool:
        """Whether the checkpoint at `index` (0-based, step order) of `total` keeps its weights."""
        if self.kind in ("all", "none"):
            return self.kind == "all"
        if self.kind == "last":
            return index >= total - self.count
        return index % self.count == 0 or index == total - 1

    @property
    def deletes(self) -> bool:
        return self.kind in ("every", "last")

    def __str__(self) -> str:
        return self.kind if self.kind in ("all", "none") else f"{self.kind}:{self.count}"


# The default keeps the newest two checkpoints' weights: the last one, and the one before it to
# compare with, at a bounded cost (2 x the model size) however long the run; see WeightsPolicy.
DEFAULT_KEEP_WEIGHTS = "last:2"


def weights_policy(keep_weights: str | WeightsPolicy | None, save_weights: bool) -> WeightsPolicy:
    """keep_weights, with the older save_weights=False meaning "none"."""
    if save_weights:
        return WeightsPolicy.parse(DEFAULT_KEEP_WEIGHTS if keep_weights is None else keep_weights)
    if keep_weights is not None and str(WeightsPolicy.parse(keep_weights)) != "none":
        raise InvalidInputError(f"save_weights=False and keep_weights={keep_weights!r} contradict each other; "
                                "pass only keep_weights (save_weights=False is the older keep_weights='none')")
    return WeightsPolicy("none")
