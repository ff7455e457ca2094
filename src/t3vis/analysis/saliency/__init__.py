"""Token saliency toward a chosen class: one module per method, one call for all of them.

    t3vis.explain(model, tokenizer, texts, method, target=None, *, targets=None, task=None, token=None,
                  foil=None, n_steps=None, batch_size=None, max_length=128, precision="float32")
        -> list[Attribution]            (classification: task=None or "classification")
        -> list[SequenceAttribution]    (task="causal-lm" or "seq2seq": see generative.py)

For a generative task each target token's log-probability (teacher forced) is attributed to
every input token, a matrix per example; the rest of this docstring is about classifiers.

What is explained is the target class's **logit** (pre-softmax), for every method, so that the
scores of gradient x input, integrated gradients and LRP are in logit units and comparable.
Scores are given for every token the model sees, special tokens included, at the output of
the word-embedding module (`model.get_input_embeddings()`).

| method                 | score per token                                    | delta, delta_relative      |
|------------------------|----------------------------------------------------|----------------------------|
| `gradient`             | L2 norm of d logit / d embedding (unsigned)        | None, None                 |
| `grad_x_input`         | sum_d gradient * embedding (signed)                | None, None                 |
| `integrated_gradients` | Gauss-Legendre IG from a pad baseline (signed)     | completeness error (below) |
| `lrp`                  | conservative propagation, Ali et al. 2022 (signed) | None, None                 |
| `attention_rollout`    | rollout row of the pooled token (sums to one)      | None, None                 |

Completeness error of integrated gradients, with f(x) and f(baseline) the target logit at the
path's two end points:

    delta          = |sum(scores) - (f(x) - f(baseline))|      absolute, in logit units
    delta_relative = delta / |f(x) - f(baseline)|              None where f(x) == f(baseline)

The relative error explodes where f(x) is close to f(baseline), so it is given next to the
absolute one, never instead of it.

Steps of integrated gradients (n_steps): by default (None) chosen per example, the first of
16, 24, 32, 48, 64, ... 256 whose relative completeness error is at most 1%, starting at the
largest size the example's length affords (48 steps at 24 tokens, 16 at 72: integrated_gradients.py);
`Attribution.n_steps` says how many it took. An explicit n_steps is used exactly, for every
example. Generative tasks take 50 unless told.

precision: "float32" (default), or "bfloat16" to run the model's forward and backward under
`torch.autocast` in bfloat16: integrated gradients ran 1.8x faster than in float32 on 2 cores
with AVX-512 BF16 or AMX, 1.5x on an H100 (bench_saliency), at the cost of accuracy.
Integrated gradients keeps its two end points in float32, so its completeness delta still
measures the error honestly (on the demo model: median relative delta 0.6% in bfloat16 against
0.002% in float32; per-token Pearson with float32 above 0.999).

The model runs in eval mode (dropout off) and is left as it was found: training flags
restored, no parameter's `.grad` touched (gradients come from `torch.autograd.grad` to the
embeddings only), every hook removed.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from t3vis.errors import InvalidInputError
from t3vis.models.structure import eval_mode

METHODS = ("gradient", "grad_x_input", "integrated_gradients", "lrp", "attention_rollout")
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}
GENERATIVE_STEPS = 50          # integrated gradients of a generative task when n_steps is None

__all__ = ["METHODS", "Attribution", "SequenceAttribution", "explain"]


def __getattr__(name: str):
    if name == "SequenceAttribution":        # lazily: the generative module imports the tasks
        from t3vis.analysis.saliency.generative import SequenceAttribution

        return SequenceAttribution
    raise AttributeError(name)


@dataclass(frozen=True, eq=False)
class Attribution:
    """One text's saliency. Compare scores with numpy, not with ==."""

    tokens: list[str]       # every token the model saw, special tokens included
    scores: np.ndarray      # (len(tokens),) float32; see the method table in the module docstring
    target: int             # the class explained (the model's prediction unless one was given)
    method: str
    delta: float | None           # integrated gradients: |sum(scores) - (f(x) - f(baseline))|; else None
    delta_relative: float | None  # delta / |f(x) - f(baseline)|; None for the other methods and where the gap is 0
    n_steps: int | None = None    # integrated gradients: the quadrature steps this text took; else None


def _completeness(scores: np.ndarray, gap: float | None) -> tuple[float | None, float | None]:
    """(delta, delta_relative) of scores against the end-point gap f(x) - f(baseline); Nones without a gap."""
    if gap is None:
        return None, None
    delta = abs(float(scores.astype(np.float64).sum()) - gap)
    return delta, (delta / abs(gap) if gap != 0 else None)


def _targets(target, n_texts: int, num_labels: int) -> np.ndarray | None:
    if target is None:
        return None
    values = [target] * n_texts if isinstance(target, (int, np.integer)) else list(target)
    if len(values) != n_texts:
        raise InvalidInputError(f"{len(values)} targets for {n_texts} texts: give one class, or one per text")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InvalidInputError(f"target {v!r} is not a class index; give an int in 0..{num_labels - 1}")
        if not 0 <= v < num_labels:
            raise InvalidInputError(f"target {v} is outside the model's classes 0..{num_labels - 1}")
    return np.asarray(values, dtype=np.int64)


def default_batch_size(device: torch.device) -> int:
    """Sequences per pass when the caller names none: a GPU only runs full on many more rows."""
    return 64 if device.type == "cpu" else 512


def _check(texts, method: str, n_steps: int | None, batch_size: int, max_length: int, precision: str) -> list[str]:
    if method not in METHODS:
        raise InvalidInputError(f"unknown saliency method {method!r}; choose one of {', '.join(METHODS)}")
    if precision not in PRECISIONS:
        raise InvalidInputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise InvalidInputError("no texts to explain: give at least one")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InvalidInputError(f"text {bad[0]} is a {type(texts[bad[0]]).__name__}, not a string")
    for name, value, least in (("n_steps", n_steps, 1), ("batch_size", batch_size, 1), ("max_length", max_length, 1)):
        if name == "n_steps" and value is None:        # adaptive
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InvalidInputError(f"{name} must be an integer >= {least}, not {value!r}")
    return texts


def explain(model, tokenizer, texts: Sequence[str] | str, method: str, target: int | Sequence[int] | None = None,
            *, targets: Sequence[str] | None = None, task=None, token: int | Sequence[int] | None = None,
            foil=None, n_steps: int | None = None, batch_size: int | None = None, max_length: int = 128,
            precision: str = "float32") -> list:
    """Saliency of every token of every text: toward `target` for a classifier, or of every target
    token of a generative task (a matrix per text, see generative.py).

    target: one class for all texts or one per text (classification; default each text's
    predicted class). task: a task name or Task (t3vis.tasks.get_task); None means
    classification. targets: a generative task's target texts (seq2seq: required; causal-lm:
    completions of the texts as prompts, or None to score every token of the whole text).
    token: the target tokens to explain, an index or a list (default all; cost scales with
    the number asked). foil: a token id or token string, one for all asked tokens or one per
    asked token: explain log p(target) - log p(foil) at each asked position.
    n_steps: integrated-gradients steps (ignored by the others); None: per example until the
    completeness error is at most 1% (classification; generative tasks take 50). batch_size: sequences per
    forward pass (default 64 on a CPU, 512 on an accelerator); for integrated gradients a
    sequence is one (example, step) pair, and one batch mixes the steps of many examples.
    precision: "float32" or "bfloat16" (see the module docstring).
    """
    from t3vis.analysis.saliency._common import encode, model_device
    from t3vis.tasks import get_task
    from t3vis.tasks.generative import GenerativeTask

    if batch_size is None:
        batch_size = default_batch_size(model_device(model))
    texts = _check(texts, method, n_steps, batch_size, max_length, precision)
    resolved = get_task(task)
    dtype = PRECISIONS[precision]
    autocast = torch.autocast(model_device(model).type, dtype=dtype, enabled=dtype is not None)
    if isinstance(resolved, GenerativeTask):
        from t3vis.analysis.saliency.generative import explain_sequences

        if target is not None:
            raise InvalidInputError(f"target= names a class; {resolved.name} has none: give the target texts as "
                                    "targets=[...] and the target tokens to explain as token=")
        steps = GENERATIVE_STEPS if n_steps is None else n_steps
        with eval_mode(model), torch.enable_grad(), autocast:
            return explain_sequences(model, tokenizer, resolved, texts, method, targets, token, foil,
                                     n_steps=steps, batch_size=batch_size, max_length=max_length)
    for name, value in (("targets", targets), ("token", token), ("foil", foil)):
        if value is not None:
            raise InvalidInputError(f"{name}= is for generative tasks (task='causal-lm' or 'seq2seq'); a classifier "
                                    "explains one class per text: give it as target=")
    num_labels = int(getattr(model.config, "num_labels", 0) or 0)
    classes = _targets(target, len(texts), num_labels)
    enc = encode(tokenizer, texts, max_length)
    module = importlib.import_module(f"t3vis.analysis.saliency.{method}")
    with eval_mode(model), torch.enable_grad(), autocast:
        results = module.attribute(model, enc, classes, n_steps=n_steps, batch_size=batch_size)
    # integrated gradients adds the steps each text took to (scores, target, gap)
    return [Attribution(tokens, scores, chosen, method, *_completeness(scores, gap), *steps)
            for tokens, (scores, chosen, gap, *steps) in zip(enc.tokens, results)]
