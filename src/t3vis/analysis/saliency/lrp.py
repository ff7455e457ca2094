"""Layer-wise relevance propagation for Transformers by conservative propagation (Ali et al. 2022).

"XAI for Transformers: Better Explanations through Conservative Propagation" shows that plain
gradient x input breaks relevance conservation at two places, and fixes both by treating a
quantity as constant in the backward pass:

- attention heads (rule LRP-AH): the softmax output, the attention weights, is detached, so
  relevance flows through the values only, in proportion to the weights;
- LayerNorm (rule LRP-LN): the normalisation scale 1/sqrt(var + eps) is detached, so the layer
  is linear (centring, then a constant scale) in the backward pass. RMSNorm (Llama, T5) the
  same way: its 1/rms(x) is detached (norms.py finds the hand-written ones).

The forward pass is unchanged: the same logits come out. Then relevance is gradient x input at
the word embeddings, summed over the embedding dimension. With both rules (and positively
homogeneous activations such as ReLU, and no bias terms) the network is homogeneous of degree
one in the word embeddings, so the token relevances sum to the target logit exactly; biases,
position embeddings and GELU's curvature take their share of it in real models.

The rules are applied structurally, by operation rather than by module name: a
`TorchFunctionMode` active only during this method's forward passes rewrites every
`softmax`, `layer_norm` and `rms_norm` call it sees. Hand-written RMS norms, which call none
of those, get a forward hook for the duration (`conservative_rules`, see norms.py); hooks and
mode come off in `finally`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from t3vis.analysis.saliency._common import Encoded, embedding_gradients
from t3vis.analysis.saliency.grad_x_input import gradient_times_input
from t3vis.analysis.saliency.norms import constant_rms_scales, rms_norm_constant_scale

_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax, torch.special.softmax}


def _layer_norm_constant_scale(x: torch.Tensor, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """layer_norm with 1/std treated as a constant in the backward pass (rule LRP-LN)."""
    dims = tuple(range(-len(normalized_shape), 0))
    centred = x - x.mean(dim=dims, keepdim=True)                                    # (..., d)
    scale = torch.rsqrt(centred.pow(2).mean(dim=dims, keepdim=True) + eps).detach()  # (..., 1)
    out = centred * scale
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def _rms_norm_constant_scale(x: torch.Tensor, normalized_shape, weight=None, eps: float | None = None):
    """F.rms_norm with 1/rms treated as a constant (over the last dimension, as transformers uses it)."""
    if len(normalized_shape) != 1:
        raise NotImplementedError("LRP holds an RMS norm over the last dimension only")
    gain = weight if weight is not None else torch.ones(normalized_shape, dtype=x.dtype, device=x.device)
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    return rms_norm_constant_scale(x, gain, eps, x.dtype)


class ConservativePropagation(TorchFunctionMode):
    """Detach the attention weights and the LayerNorm / RMSNorm scale in every forward run inside it."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SOFTMAX:
            return func(*args, **kwargs).detach()
        if func is F.layer_norm:
            return _layer_norm_constant_scale(*args, **kwargs)
        if func is F.rms_norm:
            return _rms_norm_constant_scale(*args, **kwargs)
        return func(*args, **kwargs)


@contextmanager
def conservative_rules(model: nn.Module) -> Iterator[None]:
    """Both rules on every forward of `model` inside it; UnsupportedModelError for a norm it cannot hold."""
    with constant_rms_scales(model), ConservativePropagation():
        yield


def attribute(model: nn.Module, enc: Encoded, targets: np.ndarray | None, *, n_steps: int, batch_size: int
              ) -> list[tuple[np.ndarray, int, None]]:
    with conservative_rules(model):
        grads = embedding_gradients(model, enc, targets, batch_size)
    return [gradient_times_input(emb, grad, target) for emb, grad, target in grads]
