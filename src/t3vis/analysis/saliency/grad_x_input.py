"""Gradient x input: sum over the embedding dimension of (d target-logit / d e_t) * e_t.

Signed: positive tokens push the target logit up. The first-order Taylor term of the logit
around a zero embedding.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from t3vis.analysis.saliency._common import Encoded, embedding_gradients


def attribute(model: nn.Module, enc: Encoded, targets: np.ndarray | None, *, n_steps: int, batch_size: int
              ) -> list[tuple[np.ndarray, int, None]]:
    return [gradient_times_input(emb, grad, target)
            for emb, grad, target in embedding_gradients(model, enc, targets, batch_size)]


def gradient_times_input(emb, grad, target: int) -> tuple[np.ndarray, int, None]:
    scores = (emb * grad).sum(-1)                     # (T, E) -> (T,)
    return scores.float().cpu().numpy(), target, None
