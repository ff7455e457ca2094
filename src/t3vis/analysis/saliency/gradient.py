"""Input gradient (saliency map): the L2 norm of d target-logit / d word embedding, per token.

Unsigned by construction: it says how strongly a token's embedding moves the target logit,
not in which direction (use `grad_x_input` or `integrated_gradients` for a sign).
"""

from __future__ import annotations

import numpy as np
from torch import nn

from t3vis.analysis.saliency._common import Encoded, embedding_gradients


def attribute(model: nn.Module, enc: Encoded, targets: np.ndarray | None, *, n_steps: int, batch_size: int
              ) -> list[tuple[np.ndarray, int, None]]:
    results = []
    for _, grad, target in embedding_gradients(model, enc, targets, batch_size):
        scores = grad.norm(dim=-1)                    # (T,)
        results.append((scores.float().cpu().numpy(), target, None))
    return results
