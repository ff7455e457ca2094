"""Attention weights of every head for one text, token to token.

Tokenised exactly as `t3vis.explain` tokenises, so the T x T matrices line up with the
saliency view's tokens. The model runs in eval mode and is left as found.
"""

from __future__ import annotations

import numpy as np
import torch

from t3vis.analysis.saliency._common import encode, model_device
from t3vis.errors import UnsupportedModelError
from t3vis.models.structure import eval_mode


def attention_maps(model, tokenizer, text: str, max_length: int = 128) -> np.ndarray:
    """float32 (L, H, T, T): row q is query token q's attention over the keys (sums to one)."""
    enc = encode(tokenizer, [text], max_length)
    ids = torch.as_tensor(enc.ids[0], device=model_device(model))[None]              # (1, T)
    with eval_mode(model), torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
    if not out.attentions or out.attentions[0] is None:
        raise UnsupportedModelError(f"{type(model).__name__} returned no attention weights; load it with "
                                    'attn_implementation="eager" (other kernels return none)')
    return torch.stack([a[0] for a in out.attentions]).float().cpu().numpy()         # (L, H, T, T)
