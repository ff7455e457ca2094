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

Any task (t3vis.tasks): loss_n is the task's loss of example n, the cross-entropy of its class
for classification and the mean negative log-likelihood of its target tokens for `causal-lm`
and `seq2seq` (the model's own `outputs.loss` for that example alone). A single-stack model
(an encoder classifier, a decoder-only language model) gives one (L, H) array; an
encoder-decoder one per stack, {"encoder": ..., "decoder": ..., "cross": ...}.

`evaluate` masks heads with forward pre-hooks (t3vis.models.gates), never with
`prune_heads` (which mutates the model) or `head_mask` (which transformers 5 ignores).
Heads to mask are {layer: heads} for a single-stack model and {stack: {layer: heads}} for an
encoder-decoder. A classifier's evaluation is an EvaluationResult (accuracy, predictions,
class probabilities); a language model's a GenerativeEvaluationResult (token-weighted loss,
perplexity and token accuracy): the two share no measure but the loss, so they are two types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import torch
from torch import nn

from t3vis.errors import InvalidInputError, NotFoundError
from t3vis.models.batches import Labels, unwrap
from t3vis.models.gates import masked_stacks
from t3vis.models.head_gradients import capture_stack_contexts, stack_gate_gradients
from t3vis.models.structure import AttentionLayout, eval_mode, find_stacks
from t3vis.tasks import get_task
from t3vis.tasks.base import Examples, Task

METHODS = ("gate", "taylor")

MaskedHeads: TypeAlias = "dict[int, tuple[int, ...]]"               # layer -> heads, one stack
StackMasks: TypeAlias = "dict[str, dict[int, tuple[int, ...]]]"     # stack -> layer -> heads
PerStack: TypeAlias = "np.ndarray | dict[str, np.ndarray]"          # one array, or one per stack


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """A classifier's answers on a set of examples with some heads masked; arrays are read-only."""

    accuracy: float               # share predicted right; examples with non-finite logits count as wrong
    loss: float                   # mean cross-entropy over examples with a finite loss (NaN if none)
    predictions: np.ndarray       # (n,) int64; -1 where the logits were not finite
    probs: np.ndarray             # (n, C) float32
    losses: np.ndarray            # (n,) float32 per example, NaN where the model's output was not finite
    masked_heads: MaskedHeads | StackMasks
    nan_examples: int


@dataclass(frozen=True, eq=False)
class GenerativeEvaluationResult:
    """A language model's loss on a set of examples with some heads masked; arrays are read-only.

    The set's loss is token-weighted, as the model's own loss over all the examples in one
    batch: every target token counts once, so a long target weighs more than a short one.
    Examples whose loss is not finite are left out of the set's measures and counted.
    """

    loss: float                   # mean negative log-likelihood over all target tokens (NaN if none is finite)
    perplexity: float             # exp(loss)
    token_accuracy: float         # share of target tokens that are the model's most likely token
    losses: np.ndarray            # (n,) float32 mean target-token NLL per example, NaN where not finite
    perplexities: np.ndarray      # (n,) float32 exp(losses)
    token_accuracies: np.ndarray  # (n,) float32
    mean_probs: np.ndarray        # (n,) float32 mean probability of the target tokens
    n_tokens: np.ndarray          # (n,) int64 target tokens per example
    masked_heads: MaskedHeads | StackMasks
    nan_examples: int


def gate_gradients(model: nn.Module, tokenizer, texts: Sequence[str], labels: Labels | None = None, *,
                   task: str | Task | None = None, targets: Sequence[str] | None = None, batch_size: int = 32,
                   max_length: int = 128, layout: AttentionLayout | None = None) -> PerStack:
    """Signed d loss / d head gate per example, (n, L, H) float32, in the order of texts.

    task: None or "classification" for a classifier, "causal-lm" or "seq2seq" for a language
    model. labels are a classifier's classes; targets a language model's target texts
    (seq2seq) or completions (causal-lm; None: each whole text is the target). An
    encoder-decoder gives {stack: (n, L, H)}; layout, if given, restricts them to that stack.
    """
    model = unwrap(model)
    task, examples = _examples(model, texts, labels, targets, task)
    layouts = (layout,) if layout is not None else find_stacks(model)
    device = next(model.parameters()).device
    grads = {lay.stack: np.zeros((len(examples), lay.num_layers, lay.num_heads), np.float32) for lay in layouts}
    batches = task.batches(model, tokenizer, examples, batch_size=batch_size, max_length=max_length, device=device)
    with eval_mode(model), torch.enable_grad():
        for batch in batches:
            with capture_stack_contexts(layouts, device) as contexts:
                logits = model(**batch.inputs).logits
            loss = task.losses(logits, batch)                                             # (B,)
            for lay, stack_grads in zip(layouts, stack_gate_gradients(contexts, loss)):
                grads[lay.stack][batch.rows] = stack_grads.cpu().numpy()
    return _one_or_per_stack(grads)


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


def head_importance(model: nn.Module, tokenizer, texts: Sequence[str], labels: Labels | None = None, *,
                    task: str | Task | None = None, targets: Sequence[str] | None = None, method: str = "gate",
                    batch_size: int = 32, max_length: int = 128, normalize: bool = True,
                    layout: AttentionLayout | None = None) -> PerStack:
    """(L, H) importance of every head over the given examples (all, a selection or one);
    {stack: (L, H)} for an encoder-decoder. labels and targets as for gate_gradients.

    One forward and one gradient to the head gates per batch; the model is left as found
    (training flags restored, hooks removed, no parameter's `.grad` touched).
    """
    if method not in METHODS:
        raise InvalidInputError(f"unknown head importance method {method!r}; choose one of {', '.join(METHODS)}")
    grads = gate_gradients(model, tokenizer, texts, labels, task=task, targets=targets, batch_size=batch_size,
                           max_length=max_length, layout=layout)
    if isinstance(grads, dict):
        return {stack: importance_from_gate_gradients(g, method=method, normalize=normalize)
                for stack, g in grads.items()}
    return importance_from_gate_gradients(grads, method=method, normalize=normalize)


def validate_masked_heads(layout: AttentionLayout, masked_heads: Mapping | None, *,
                          stack: str | None = None) -> MaskedHeads:
    """{layer: heads} checked against one stack: NotFoundError names the valid ranges (and the stack)."""
    if masked_heads is None:
        return {}
    if not isinstance(masked_heads, Mapping):
        raise InvalidInputError(f"masked_heads must map layer -> list of heads, e.g. {{2: [0, 5]}}, "
                                f"not {type(masked_heads).__name__}")
    L, H = layout.num_layers, layout.num_heads
    where, layers = ("the model", "every layer") if stack is None else (f"the {stack}", f"every {stack} layer")
    clean: dict[int, tuple[int, ...]] = {}
    for layer, heads in masked_heads.items():
        layer = _index(layer, "layer")
        if not 0 <= layer < L:
            raise NotFoundError(f"layer {layer} does not exist: {where} has layers 0..{L - 1}")
        heads = [heads] if isinstance(heads, (int, np.integer)) else heads
        if not isinstance(heads, Iterable) or isinstance(heads, (str, bytes)):
            raise InvalidInputError(f"the heads of layer {layer} must be a list of head indices, not {heads!r}")
        checked = sorted({_index(h, "head") for h in heads})
        missing = [h for h in checked if not 0 <= h < H]
        if missing:
            raise NotFoundError(f"head {missing[0]} of layer {layer} does not exist: {layers} has heads "
                                f"0..{H - 1}")
        clean[layer] = tuple(sorted(set(clean.get(layer, ())) | set(checked)))
    return clean


def validate_stack_masks(layouts: Sequence[AttentionLayout], masked_heads: Mapping | None) -> StackMasks:
    """The heads to mask per stack name: {layer: heads} for a single-stack model, {stack: {layer: heads}}
    for an encoder-decoder, checked against the model (NotFoundError names what exists)."""
    if len(layouts) == 1:
        return {layouts[0].stack: validate_masked_heads(layouts[0], masked_heads)}
    names = ", ".join(lay.stack for lay in layouts)
    if masked_heads is None:
        return {}
    if not isinstance(masked_heads, Mapping):
        raise InvalidInputError(f"masked_heads must map stack -> {{layer: heads}}, e.g. {{'decoder': {{0: [1]}}}}, "
                                f"not {type(masked_heads).__name__}")
    by_name = {lay.stack: lay for lay in layouts}
    clean: StackMasks = {}
    for stack, heads in masked_heads.items():
        if not isinstance(stack, str):
            raise InvalidInputError(f"the model has several attention stacks ({names}): masked_heads maps a stack "
                                    f"to its {{layer: heads}}, e.g. {{'decoder': {{0: [1]}}}}, not layer {stack!r} "
                                    "to heads")
        if stack not in by_name:
            raise NotFoundError(f"stack {stack!r} does not exist: the model has the stacks {names}")
        clean[stack] = validate_masked_heads(by_name[stack], heads, stack=stack)
    return clean


def _index(value, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, str)):
        raise InvalidInputError(f"a {what} is an integer index, not {value!r}")
    try:
        return int(value)
    except ValueError:
        raise InvalidInputError(f"a {what} is an integer index, not {value!r}") from None


def evaluate(model: nn.Module, tokenizer, texts: Sequence[str], labels: Labels | None = None,
             masked_heads: Mapping | None = None, *, task: str | Task | None = None,
             targets: Sequence[str] | None = None, batch_size: int = 32, max_length: int = 128,
             layout: AttentionLayout | None = None) -> EvaluationResult | GenerativeEvaluationResult:
    """The model's measures on the examples with the given heads gated to zero; the model is left as found.

    A classifier gives an EvaluationResult, a language model (task causal-lm or seq2seq) a
    GenerativeEvaluationResult. masked_heads: {layer: heads}, or {stack: {layer: heads}} for
    an encoder-decoder; a language model has no labels, so name it: masked_heads={...}.
    task, labels and targets as for gate_gradients.
    """
    model = unwrap(model)
    task, examples = _examples(model, texts, labels, targets, task)
    layouts = (layout,) if layout is not None else find_stacks(model)
    masks = validate_stack_masks(layouts, masked_heads)
    device = next(model.parameters()).device
    columns: dict[str, np.ndarray] = {}
    batches = task.batches(model, tokenizer, examples, batch_size=batch_size, max_length=max_length, device=device)
    with eval_mode(model), torch.no_grad(), masked_stacks(layouts, masks, device):
        for batch in batches:
            logits = model(**batch.inputs).logits
            losses = task.losses(logits, batch).float().cpu().numpy()
            for name, values in task.outputs(logits, batch, losses).per_example.items():
                if name not in columns:
                    columns[name] = np.empty((len(examples), *np.shape(values)[1:]), np.asarray(values).dtype)
                columns[name][batch.rows] = values
    shown = masks[layouts[0].stack] if len(layouts) == 1 else {s: heads for s, heads in masks.items() if heads}
    if task.format.token_outputs:
        return _generative_result(columns, shown)
    return _classification_result(columns, examples.labels, shown)


def _examples(model: nn.Module, texts: Sequence[str], labels, targets, task) -> tuple[Task, Examples]:
    """The task and its validated examples; labels (classes) and targets (texts) are one argument by two names."""
    task = get_task(task)
    task.check_model(model)
    if isinstance(labels, Mapping):
        raise InvalidInputError("labels is a mapping: pass the heads to mask by name, masked_heads={...} (the fourth "
                                "argument is a classifier's labels)")
    if labels is not None and targets is not None:
        raise InvalidInputError("give labels (a classifier's classes) or targets (a language model's target texts), "
                                "not both")
    return task, task.examples(model, texts, labels if labels is not None else targets, what="set of examples")


def _one_or_per_stack(arrays: dict[str, np.ndarray]) -> PerStack:
    return next(iter(arrays.values())) if len(arrays) == 1 else arrays


def _read_only(*arrays: np.ndarray) -> None:
    for array in arrays:
        array.setflags(write=False)


def _classification_result(columns: dict[str, np.ndarray], labels: np.ndarray,
                           masked: MaskedHeads | StackMasks) -> EvaluationResult:
    nan = columns["nan"]
    losses = np.where(nan, np.nan, columns["loss"]).astype(np.float32)
    probs = columns["probs"].astype(np.float32)
    predictions = columns["pred"].astype(np.int64)
    _read_only(losses, probs, predictions)
    return EvaluationResult(accuracy=float((predictions == labels).mean()),
                            loss=float(np.nanmean(losses)) if (~nan).any() else float("nan"),
                            predictions=predictions, probs=probs, losses=losses, masked_heads=masked,
                            nan_examples=int(nan.sum()))


def _generative_result(columns: dict[str, np.ndarray], masked: MaskedHeads | StackMasks) -> GenerativeEvaluationResult:
    ok = ~columns["nan"]
    losses = np.where(ok, columns["loss"], np.nan).astype(np.float32)
    with np.errstate(over="ignore"):
        perplexities = np.exp(losses.astype(np.float64)).astype(np.float32)
    accuracies = columns["token_accuracy"].astype(np.float32)
    mean_probs = columns["mean_prob"].astype(np.float32)
    n_tokens = columns["n_tokens"].astype(np.int64)
    tokens = n_tokens[ok].astype(np.float64)
    if tokens.sum() > 0:
        loss = float((losses[ok].astype(np.float64) * tokens).sum() / tokens.sum())
        accuracy = float((accuracies[ok].astype(np.float64) * tokens).sum() / tokens.sum())
    else:
        loss = accuracy = float("nan")
    _read_only(losses, perplexities, accuracies, mean_probs, n_tokens)
    with np.errstate(over="ignore"):
        perplexity = float(np.exp(loss))
    return GenerativeEvaluationResult(loss=loss, perplexity=perplexity, token_accuracy=accuracy, losses=losses,
                                      perplexities=perplexities, token_accuracies=accuracies, mean_probs=mean_probs,
                                      n_tokens=n_tokens, masked_heads=masked, nan_examples=int((~ok).sum()))
