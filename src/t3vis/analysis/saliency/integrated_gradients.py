"""Integrated gradients (Sundararajan et al. 2017) at the word embeddings.

    IG_t = sum_d (e_td - b_td) * integral_0^1 d f(b + a (e - b)) / d e_td  da

f is the target logit; e the word embeddings of the text; b those of the baseline, the same
ids with every token replaced by the pad token and the special tokens ([CLS], [SEP], <s>, ...)
kept. As in Captum's `LayerIntegratedGradients` on the embedding layer, only the word-embedding
output is interpolated: the model still sees the text's ids everywhere else (positions, token
types, the decoder's pooled position).

The integral is taken by Gauss-Legendre quadrature on [0, 1] with `n_steps` nodes (Captum's
default, "gausslegendre"): for these smooth paths it is far more accurate than a Riemann sum
at the same cost.

Steps: a given `n_steps` is used for every example, exactly (Captum comparisons stay like for
like). Without one (None, t3vis.explain's default) each example starts at the size of
STEP_SCHEDULE its length affords (`first_steps`) and takes the first size from there whose
completeness error (below) is at most 1% of the gap, or the last size; the examples still
pending run their next size together, and each result says how many steps it took.

Batching: the (example, step) pairs of all examples, examples sorted by length, are cut into
batches of `batch_size` rows, each padded only to its own longest example; one forward and one
`torch.autograd.grad` per batch, whatever the number of examples or steps in it. A batch also
holds at most MAX_TOKENS_PER_PASS padded tokens, so a large GPU batch size cannot run long
texts out of memory. The end points f(e) and f(b) (a = 1 and a = 0, two rows per example) are
batched the same way, under the same two limits.

`attribute` returns, per example, the scores, the target and the gap f(e) - f(b) of the
target logit; `explain` turns the gap into the completeness error (Sundararajan et al.'s
sanity check, exact IG has sum_t IG_t = f(e) - f(b)):

    delta          = |sum_t IG_t - (f(e) - f(b))|                 (absolute, in logit units)
    delta_relative = delta / |f(e) - f(b)|                        (None where f(e) = f(b))

The relative error explodes where f(e) is close to f(b), so read it with the absolute one.
f(e) and f(b) come from their own no-grad forward at the path's end points, in float32 even
under a bfloat16 autocast.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from t3vis.analysis.saliency._common import (
    EmbeddingTap,
    Encoded,
    embedding_tap,
    logits_of,
    model_device,
    pad,
    pick_targets,
    to_device,
)

MAX_TOKENS_PER_PASS = 32_768

# Adaptive steps (n_steps=None): each example runs the schedule's sizes in turn until its
# completeness error is within tolerance. Gauss-Legendre nodes of different sizes do not nest,
# so a size that misses is work thrown away, and the first size sets the cost of most requests.
# On the demo model fine-tuned (runs/demo, 60 validation sentences) 24 steps met 1% for 97% of
# them, 16 for 53%, 32 for all: starting at 16 and doubling costs 16 + 32 = 48 steps for half
# the sentences, about the old fixed 50. Past the first size the steps grow by about 1.4x.
# A step costs a pass over every token, and the sentences that missed at 24 were short ones
# (14-23 tokens of bench_instance_ig's 40), while the long ones met it with room to spare
# (errors of 1e-4 at 44-63 tokens): so an example starts at the largest size whose
# steps x tokens fit FIRST_STEPS_BUDGET, at most FIRST_STEPS_MAX (the smallest size where
# none fits). Starting every one at 24, a 23-token sentence took 24 + 32 + 48 steps (0.54 s)
# and the 63-token one 24 (0.35 s); from their lengths they start at 48 and 16.
STEP_SCHEDULE = (16, 24, 32, 48, 64, 96, 128, 192, 256)
FIRST_STEPS_BUDGET = 1152        # steps x tokens of an example's first size: 48 x 24, 16 x 72
FIRST_STEPS_MAX = 64
RELATIVE_TOLERANCE = 0.01        # |sum(IG) - (f(x) - f(b))| <= 1% of |f(x) - f(b)|
ABSOLUTE_TOLERANCE = 1e-4        # logit units, only where f(x) == f(b) exactly (no relative error)


def first_steps(tokens: int) -> int:
    """The index in STEP_SCHEDULE an example of `tokens` tokens starts at: the largest size up to
    FIRST_STEPS_MAX with size x tokens <= FIRST_STEPS_BUDGET, or the first size."""
    fits = [i for i, size in enumerate(STEP_SCHEDULE)
            if size <= FIRST_STEPS_MAX and size * max(tokens, 1) <= FIRST_STEPS_BUDGET]
    return fits[-1] if fits else 0


def gauss_legendre(n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas (n,), weights (n,)) on [0, 1]; the weights sum to one."""
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    return 0.5 * (nodes + 1.0), 0.5 * weights


def _end_points(model: nn.Module, tap: EmbeddingTap, enc: Encoded, targets: np.ndarray | None, batch_size: int
                ) -> tuple[list[torch.Tensor], np.ndarray, np.ndarray]:
    """Per example: e - b (T_i, E), target, f(e) - f(b), from no-grad passes over both end points.

    The two end points of an example are its two rows (a = 1, then a = 0), batched by
    `pair_batches` with two steps: the same row count and padded-token cap as the path.
    """
    device = model_device(model)
    lengths = np.asarray([len(x) for x in enc.ids])
    order = np.argsort(lengths, kind="stable")
    embedded: dict[tuple[int, int], torch.Tensor] = {}                             # (end, example): (T_i, E)
    ends, examples, outputs = [], [], []
    for flat in pair_batches(lengths, 2, batch_size, MAX_TOKENS_PER_PASS):
        example, end = order[flat // 2], flat % 2                                  # end 0: the text, 1: baseline
        ids, mask = pad([enc.ids[i] for i in example], enc.pad_id, device)         # (R, T)
        shown, _ = pad([enc.baseline_ids(i) if e else enc.ids[i] for i, e in zip(example, end)],
                       enc.pad_id, device)                                          # (R, T)
        tap.replacement = tap.embed(shown)                                          # (R, T, E)
        # full precision even under a bfloat16 autocast: the completeness delta is measured against these
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            outputs.append(logits_of(model, ids, mask).double())                   # (R, C)
        for r, (i, e) in enumerate(zip(example, end)):
            embedded[int(e), int(i)] = tap.replacement[r, :lengths[i]]
        tap.replacement = None
        ends.append(end)
        examples.append(example)
    rows = torch.cat(outputs)                                                       # (2N, C)
    logits = rows.new_empty((2, len(enc), rows.shape[1]))                           # (2, N, C): [end, example]
    logits[to_device(np.concatenate(ends), device), to_device(np.concatenate(examples), device)] = rows
    f_x, f_b = logits                                                               # (N, C) each
    chosen = pick_targets(f_x, targets, np.arange(len(enc)))                        # (N,)
    gaps = (f_x - f_b).gather(1, chosen[:, None])[:, 0]                             # (N,)
    diffs = [embedded[0, i] - embedded[1, i] for i in range(len(enc))]             # (T_i, E) each
    return diffs, chosen.cpu().numpy(), gaps.cpu().numpy()


def pair_batches(lengths: np.ndarray, n_steps: int, batch_size: int, max_tokens: int) -> list[np.ndarray]:
    """Batches of flat (example, step) pair numbers, pairs ordered by example length (ascending).

    Pair p is step p % n_steps of the (p // n_steps)-th shortest example. A batch is at most
    `batch_size` rows and, padded to its longest row, at most `max_tokens` tokens (one row at least).
    """
    sorted_lengths = np.sort(lengths, kind="stable")
    pairs, start, batches = len(lengths) * n_steps, 0, []
    while start < pairs:
        stop = min(start + batch_size, pairs)
        width = int(sorted_lengths[(stop - 1) // n_steps])          # ascending: the last row is the widest
        stop = min(stop, start + max(1, max_tokens // width))
        batches.append(np.arange(start, stop))
        start = stop
    return batches


def _path_gradients(model: nn.Module, tap: EmbeddingTap, enc: Encoded, targets: np.ndarray, n_steps: int,
                    batch_size: int) -> list[torch.Tensor]:
    """Per example the quadrature-weighted sum of the path gradients, (T_i, E)."""
    device = model_device(model)
    alphas, weights = gauss_legendre(n_steps)
    lengths = np.asarray([len(x) for x in enc.ids])
    order = np.argsort(lengths, kind="stable")
    totals: dict[int, torch.Tensor] = {}                                            # example: (T_i, E)
    for flat in pair_batches(lengths, n_steps, batch_size, MAX_TOKENS_PER_PASS):
        example, step = order[flat // n_steps], flat % n_steps                      # (R,) each
        members, row_of = np.unique(example, return_inverse=True)                   # U examples in this batch
        ids, mask = pad([enc.ids[i] for i in members], enc.pad_id, device)          # (U, T)
        base, _ = pad([enc.baseline_ids(i) for i in members], enc.pad_id, device)   # (U, T)
        e_x, e_b = tap.embed(ids), tap.embed(base)                                  # (U, T, E)
        rows = to_device(row_of, device)                                            # (R,)
        alpha = to_device(alphas[step], device).to(e_x.dtype)[:, None, None]       # (R, 1, 1)
        path = (e_b[rows] + alpha * (e_x[rows] - e_b[rows])).requires_grad_(True)   # (R, T, E)
        tap.replacement = path
        logits = logits_of(model, ids[rows], mask[rows]).float()                    # (R, C)
        tap.replacement = None
        chosen = to_device(targets[example], device)                                # (R,)
        grads, = torch.autograd.grad(logits.gather(1, chosen[:, None]).sum(), path)  # (R, T, E)
        w = to_device(weights[step], device).to(grads.dtype)[:, None, None]       # (R, 1, 1)
        summed = torch.zeros_like(e_x).index_add_(0, rows, grads * w)               # (U, T, E)
        for u, i in enumerate(members):
            part = summed[u, :len(enc.ids[i])]
            totals[i] = totals[i] + part if i in totals else part
    return [totals[i] for i in range(len(enc))]


def _scores(enc: Encoded, diffs: list[torch.Tensor], totals: list[torch.Tensor]) -> list[np.ndarray]:
    """Per example IG_t = sum_d (e - b)_td * path-gradient sum_td, (T_i,) float32."""
    # one copy to the host for all examples: a copy per example would wait on the device each time
    flat = torch.cat([(diff * total).sum(-1) for diff, total in zip(diffs, totals)]).float().cpu().numpy()
    return np.split(flat, np.cumsum([len(x) for x in enc.ids])[:-1])                 # (T_i,) each


def complete_enough(scores: np.ndarray, gap: float) -> bool:
    """Whether the completeness error |sum(scores) - gap| is within tolerance.

    Relative to the gap where there is one. Where f(x) == f(baseline) exactly the relative error
    is undefined (explain reports None), so an absolute tolerance in logit units stands in.
    """
    delta = abs(float(scores.astype(np.float64).sum()) - gap)      # as explain's completeness, to the bit
    if gap == 0:
        return delta <= ABSOLUTE_TOLERANCE
    return delta <= RELATIVE_TOLERANCE * abs(gap)


def attribute(model: nn.Module, enc: Encoded, targets: np.ndarray | None, *, n_steps: int | None, batch_size: int
              ) -> list[tuple[np.ndarray, int, float, int]]:
    """Per example (scores (T_i,) float32, target, f(e) - f(b) of the target logit, steps used).

    n_steps: that many steps for every example, exactly; None: per example the first of
    STEP_SCHEDULE from `first_steps` on whose completeness error is within tolerance (the last
    one otherwise).
    """
    with embedding_tap(model) as tap:
        diffs, chosen, gaps = _end_points(model, tap, enc, targets, batch_size)
        schedule = STEP_SCHEDULE if n_steps is None else (n_steps,)
        scores: list[np.ndarray | None] = [None] * len(enc)
        used = np.zeros(len(enc), dtype=np.int64)
        # each example's place in the schedule: where its length starts it, one on per miss
        level = np.asarray([first_steps(len(ids)) if n_steps is None else 0 for ids in enc.ids], dtype=np.int64)
        pending = np.arange(len(enc))
        while len(pending):
            for at in np.unique(level[pending]):
                group = pending[level[pending] == at]
                steps, last = schedule[at], at == len(schedule) - 1
                part = enc.subset(group)
                totals = _path_gradients(model, tap, part, chosen[group], steps, batch_size)
                for i, s in zip(group, _scores(part, [diffs[i] for i in group], totals)):
                    if last or complete_enough(s, float(gaps[i])):
                        scores[i], used[i] = s, steps
            pending = np.asarray([i for i in pending if scores[i] is None], dtype=np.int64)
            level[pending] += 1
    done = [s for s in scores if s is not None]          # every one: the last size takes all still pending
    return [(s, int(target), float(gap), int(n)) for s, target, gap, n in zip(done, chosen, gaps, used)]
