"""Head importance and pruning evaluation: which heads matter, and what masking them costs.

Both importance methods start from one per-example quantity, the gate gradient of
t3vis.models.head_gradients (the same code the recorder's probe pass runs):

    s[n, l, h] = d loss_n / d g[l, h]  at every gate g = 1
               = sum over positions t and head dims k of  a[n, t, l, h, k] * d loss_n / d a[n, t, l, h, k]

with a the head's context (its slice of the attention output projection's input). s is
also the first-order Taylor estimate of what removing the head does to example n's loss:
loss_n(g[l, h] = 0) - loss_n(g = 1) ~ -s[n, l, h]. So "activation x gradient summed over
the head's slice" is not a second signal: it is s. The methods differ in how they combine
the examples:

    gate    (Michel et al. 2019)      I[l, h] = sum_n |s[n, l, h]|
    taylor  (Molchanov et al. 2019)   I[l, h] = sum_n  s[n, l, h] ** 2

gate is the summed magnitude of the first-order loss change; taylor squares it, as
Molchanov et al.'s criterion for a group of weights, (sum_i g_i w_i) ** 2, which they show
equals the squared gradient of a gate on the group. A head that matters a lot to a few
examples therefore ranks higher under taylor than one that matters a little to many.
Molchanov et al. square minibatch gradients; here each example is squared on its own, so
the answer does not depend on batch_size, and one example or any selection is a valid scope.

normalize=True divides each layer's row by its L2 norm (Michel et al.), as the recorder
does for `ck.head_importance`; normalize=False gives the sums (`ck.head_importance_raw`).

`evaluate` masks heads with forward pre-hooks (t3vis.models.gates), never with
`prune_heads` (which mutates the model) or `head_mask` (which transformers 5 ignores).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from t3vis.errors import InvalidInputError, NotFoundError
from t3vis.models.batches import Labels, length_sorted_batches, num_labels, unwrap, validate_examples
from t3vis.models.gates import gated_heads, mask_to_gates
from t3vis.models.head_gradients import capture_head_contexts
from t3vis.models.structure import AttentionLayout, eval_mode, find_attention_layout

METHODS = ("gate", "taylor")


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """A model's answers on a set of examples with some heads masked; arrays are read-only."""

    accuracy: float               # share predicted right; examples with non-finite logits count as wrong
    loss: float                   # mean cross-entropy over examples with a finite loss (NaN if none)
    predictions: np.ndarray       # (n,) int64; -1 where the logits were not finite
    probs: np.ndarray             # (n, C) float32
    losses: np.ndarray            # (n,) float32 per example, NaN where the model's output was not finite
    masked_heads: dict[int, tuple[int, ...]]
    nan_examples: int


def gate_gradients(model: nn.Module, tokenizer, texts: Sequence[str], labels: Labels, *,
                   batch_size: int = 32, max_length: int = 128, layout: AttentionLayout | None = None) -> np.ndarray:
    """Signed d loss / d head gate per example, (n, L, H) float32, in the order of texts."""
    model = unwrap(model)
    classes = validate_examples(texts, labels, num_labels(model), what="set of examples")
    layout = layout or find_attention_layout(model)
    device = next(model.parameters()).device
    grads = np.zeros((len(texts), layout.num_layers, layout.num_heads), np.float32)
    batches = length_sorted_batches(tokenizer, texts, classes, batch_size=batch_size, max_length=max_length,
                                    device=device)
    with eval_mode(model), torch.enable_grad():
        for rows, enc, gold in batches:
            with capture_head_contexts(layout, device) as contexts:
                logits = model(**enc).logits.float()
            # under a device_map the logits come off the last block's device, not the first's
            loss = nn.functional.cross_entropy(logits, gold.to(logits.device), reduction="none")    # (B,)
            grads[rows] = contexts.gate_gradients(loss).cpu().numpy()
    return grads


def importance_from_gate_gradients(gate_grads: np.ndarray, *, method: str = "gate",
                                   normalize: bool = True) -> np.ndarray:
    """(n, L, H) per-example gate gradients -> (L, H) importance; see the module docstring.

    Works on `ck.example_gate_gradients(rows)` too: a selection's importance without the model.
    """
    if method not in METHODS:
        raise InvalidInputError(f"unknown head importance method {method!r}; choose one of {', '.join(METHODS)}")
    grads = np.asarray(gate_grads, dtype=np.float64)
    if grads.ndim != 3 or grads.shape[0] == 0:
        raise InvalidInputError(f"gate gradients must be (examples, layers, heads) with at least one example, "
                                f"not shape {grads.shape}")
    raw = np.abs(grads).sum(0) if method == "gate" else np.square(grads).sum(0)       # (L, H)
    if normalize:
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        raw = np.divide(raw, norms, out=np.zeros_like(raw), where=norms > 0)
    return raw.astype(np.float32)


def head_importance(model: nn.Module, tokenizer, texts: Sequence[str], labels: Labels, *,
                    method: str = "gate", batch_size: int = 32, max_length: int = 128, normalize: bool = True,
                    layout: AttentionLayout | None = None) -> np.ndarray:
    """(L, H) importance of every head over the given examples (all, a selection or one).

    One forward and one gradient to the head gates per batch; the model is left as found
    (training flags restored, hooks removed, no parameter's `.grad` touched).
    """
    if method not in METHODS:
        raise InvalidInputError(f"unknown head importance method {method!r}; choose one of {', '.join(METHODS)}")
    grads = gate_gradients(model, tokenizer, texts, labels, batch_size=batch_size, max_length=max_length,
                           layout=layout)
    return importance_from_gate_gradients(grads, method=method, normalize=normalize)


def validate_masked_heads(layout: AttentionLayout, masked_heads: Mapping | None) -> dict[int, tuple[int, ...]]:
    """{layer: heads} checked against the model: NotFoundError names the valid ranges."""
    if masked_heads is None:
        return {}
    if not isinstance(masked_heads, Mapping):
        raise InvalidInputError(f"masked_heads must map layer -> list of heads, e.g. {{2: [0, 5]}}, "
                                f"not {type(masked_heads).__name__}")
    L, H = layout.num_layers, layout.num_heads
    clean: dict[int, tuple[int, ...]] = {}
    for layer, heads in masked_heads.items():
        layer = _index(layer, "layer")
        if not 0 <= layer < L:
            raise NotFoundError(f"layer {layer} does not exist: the model has layers 0..{L - 1}")
        heads = [heads] if isinstance(heads, (int, np.integer)) else heads
        if not isinstance(heads, Iterable) or isinstance(heads, (str, bytes)):
            raise InvalidInputError(f"the heads of layer {layer} must be a list of head indices, not {heads!r}")
        checked = sorted({_index(h, "head") for h in heads})
        missing = [h for h in checked if not 0 <= h < H]
        if missing:
            raise NotFoundError(f"head {missing[0]} of layer {layer} does not exist: every layer has heads 0..{H - 1}")
        clean[layer] = tuple(sorted(set(clean.get(layer, ())) | set(checked)))
    return clean


def _index(value, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, str)):
        raise InvalidInputError(f"a {what} is an integer index, not {value!r}")
    try:
        return int(value)
    except ValueError:
        raise InvalidInputError(f"a {what} is an integer index, not {value!r}") from None


def evaluate(model: nn.Module, tokenizer, texts: Sequence[str], labels: Labels,
             masked_heads: Mapping | None = None, *, batch_size: int = 32, max_length: int = 128,
             layout: AttentionLayout | None = None) -> EvaluationResult:
    """Accuracy, loss and predictions with the given heads gated to zero; the model is left as found."""
    model = unwrap(model)
    n_classes = num_labels(model)
    classes = validate_examples(texts, labels, n_classes, what="set of examples")
    layout = layout or find_attention_layout(model)
    mask = validate_masked_heads(layout, masked_heads)
    device = next(model.parameters()).device
    logits_all = np.empty((len(texts), n_classes), np.float32)
    batches = length_sorted_batches(tokenizer, texts, classes, batch_size=batch_size, max_length=max_length,
                                    device=device)
    with eval_mode(model), torch.no_grad(), gated_heads(layout, mask_to_gates(layout, mask, device=device)):
        for rows, enc, _ in batches:
            logits_all[rows] = model(**enc).logits.float().cpu().numpy()
    return _result(logits_all, classes, mask)


def _result(logits: np.ndarray, labels: np.ndarray, mask: dict[int, tuple[int, ...]]) -> EvaluationResult:
    finite = np.isfinite(logits).all(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    losses = np.where(finite, -log_probs[np.arange(len(labels)), labels], np.nan).astype(np.float32)
    probs = np.exp(log_probs).astype(np.float32)
    predictions = np.where(finite, np.nan_to_num(logits, nan=-np.inf).argmax(axis=1), -1).astype(np.int64)
    for array in (losses, probs, predictions):
        array.setflags(write=False)
    return EvaluationResult(accuracy=float((predictions == labels).mean()),
                            loss=float(np.nanmean(losses)) if finite.any() else float("nan"),
                            predictions=predictions, probs=probs, losses=losses, masked_heads=mask,
                            nan_examples=int((~finite).sum()))
