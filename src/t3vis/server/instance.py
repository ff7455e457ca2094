"""The instance view's attention on the wire: every head's T x T weights as uint8."""

from __future__ import annotations

import numpy as np

from t3vis.analysis.attention import attention_maps


def attention_u8(model, tokenizer, text: str, max_length: int) -> np.ndarray:
    """uint8 (L, H, T, T): each query row's attention times 255, rounded (rows sum to ~255).
    Imports torch (through the analysis): call it lazily. The caller holds the model's lock."""
    att = np.nan_to_num(attention_maps(model, tokenizer, text, max_length))          # (L, H, T, T)
    return np.ascontiguousarray(np.clip(np.rint(att * 255), 0, 255).astype(np.uint8))
