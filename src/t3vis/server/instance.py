"""The instance view's attention on the wire: every head's query x key weights as uint8."""

from __future__ import annotations

import numpy as np

from t3vis.analysis.attention import attention_maps


def as_u8(att: np.ndarray) -> np.ndarray:
    """uint8 of the same shape: each query row's attention times 255, rounded (rows sum to ~255)."""
    att = np.nan_to_num(np.asarray(att, dtype=np.float32))
    return np.ascontiguousarray(np.clip(np.rint(att * 255), 0, 255).astype(np.uint8))


def attention_u8(model, tokenizer, text: str, max_length: int) -> np.ndarray:
    """uint8 (L, H, T, T) of a classifier's text. Imports torch (through the analysis): call it
    lazily. The caller holds the model's lock."""
    return as_u8(attention_maps(model, tokenizer, text, max_length))          # (L, H, T, T)
