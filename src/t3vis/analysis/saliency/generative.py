"""Token attribution for generative tasks: each target token's log-probability against every input token.

    t3vis.explain(model, tokenizer, texts, method, task="causal-lm" | "seq2seq", targets=...,
                  token=None, foil=None, ...) -> list[SequenceAttribution]

Teacher forced: target token k is scored given the source and the target tokens before it,
f_k = log p(y_k | x, y_<k), and attributed to every input token at the output of the
word-embedding module(s): for causal-lm the tokens of input_ids (prompt and completion), for
seq2seq the source tokens and then the decoder input tokens, one row of scores over both.
Causal attention makes row k zero at every input after the position that predicts y_k, exactly
(see _sequence.py: each row is computed on the input cut just after that position).

| method                 | score of input token t in row k                          | delta     |
|------------------------|----------------------------------------------------------|-----------|
| `gradient`             | L2 norm of d f_k / d e_t (unsigned)                      | None      |
| `grad_x_input`         | sum_d (d f_k / d e_t) e_t (signed)                        | None      |
| `integrated_gradients` | Gauss-Legendre IG from a pad baseline (signed)            | per row   |
| `lrp`                  | conservative propagation, Ali et al. 2022 (signed)        | None      |
| `attention_rollout`    | rollout row of the predicting position (rows sum to one)  | None      |

Integrated gradients: the baseline replaces every input token but the special ones by the pad
token (the end-of-sequence token for a tokenizer without one), in every stream, along one
path; delta per row = |sum(row) - (f_k(x) - f_k(baseline))|, delta_relative = delta / |gap|
(NaN where the gap is 0). This is Captum's LLMGradientAttribution over LayerIntegratedGradients
asked about one target token with the whole prefix as its input.

LRP: the rules of lrp.py (attention weights and LayerNorm / RMSNorm scales held constant) make
the logits z linear in the embeddings wherever the model is otherwise homogeneous. The output
log-softmax is not, and no rule makes relevance sum to log p itself (at initialisation, with
p near uniform, that sum would have to come from nowhere), so its relevance is taken exactly
from the zero-logit point (a uniform prediction): R(z_v) = z_v * integral_0^1 d f / d z_v (s z) ds,
which sums to f(z) - f(0) = log p(y_k) + log V, the log-probability gained over a uniform guess
(for a foil, log p(y_k) - log p(foil) itself). A row's relevance sums to that where the
model is homogeneous; biases and curved activations take their share in real models.

Attention rollout: decoder-only, rollout over the decoder's self-attention (attention_rollout.py),
row of the predicting position. Encoder-decoder: the encoder rollout R_enc (S x S) is rolled out
first; decoder rows start on themselves, [0 | I], and each decoder layer applies its
self-attention step (heads averaged, identity added, rows renormalised) and then its
cross-attention step, which mixes half of each row with the cross-attention (heads averaged) over
the encoder outputs, whose provenance is R_enc: R <- (R + A_cross [R_enc | 0]) / 2. Rows stay
stochastic over source + decoder inputs. Target- and foil-agnostic.

Contrastive (foil=): f_k = log p(y_k) - log p(foil) at the same position, for every method but
attention rollout.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from t3vis.analysis.saliency._common import length_batches, model_device, to_device
from t3vis.analysis.saliency._sequence import (
    SequenceEncoded,
    Units,
    check_foils,
    check_tokens,
    encode_sequences,
    model_inputs,
    picked_logits,
    sequence_taps,
    target_function,
    unit_ids,
    unit_length,
)
from t3vis.analysis.saliency.attention_rollout import rollout
from t3vis.analysis.saliency.integrated_gradients import MAX_TOKENS_PER_PASS, gauss_legendre, pair_batches
from t3vis.analysis.saliency.lrp import conservative_rules
from t3vis.errors import InvalidInputError, UnsupportedModelError

OUTPUT_RULE_NODES = 32     # Gauss-Legendre nodes of LRP's output rule (an integral over the logits only)


@dataclass(frozen=True, eq=False)
class SequenceAttribution:
    """One example's attribution matrix. Compare arrays with numpy, not with ==."""

    input_tokens: list[str]       # every input token, special tokens included; source first, then decoder inputs
    stream_lengths: dict[str, int]  # tokens per stream, in the order of input_tokens ("input", "decoder_input")
    target_tokens: list[str]      # every target token the task scores
    target_ids: np.ndarray        # (n_target,) int64
    predicted_at: np.ndarray      # (n_target,) int64: the input column whose output predicts each target token
    rows: np.ndarray              # (n_rows,) int64: the target tokens explained (all, or those asked by token=)
    scores: np.ndarray            # (n_rows, len(input_tokens)) float32; zero after predicted_at[rows[r]]
    method: str
    foil_ids: np.ndarray | None   # (n_rows,) int64 foil per row, or None
    delta: np.ndarray | None      # (n_rows,) integrated gradients: |sum(row) - (f(x) - f(baseline))|; else None
    delta_relative: np.ndarray | None  # (n_rows,) delta / |f(x) - f(baseline)|, NaN where the gap is 0


def explain_sequences(model: nn.Module, tokenizer, task, texts: list[str], method: str, targets, token, foil, *,
                      n_steps: int, batch_size: int, max_length: int) -> list[SequenceAttribution]:
    """Runs under explain's eval mode, grad mode and autocast; see the module docstring."""
    task.check_model(model)
    enc = encode_sequences(model, tokenizer, task, texts, targets, max_length)
    asked = check_tokens(token, [len(x.targets) for x in enc.examples])
    if foil is not None and method == "attention_rollout":
        raise InvalidInputError("attention_rollout does not depend on the target token, so a foil changes nothing; "
                                "choose another method for a contrastive explanation")
    vocab = _vocabulary(model)
    foils = [check_foils(foil, tokenizer, len(k), vocab) for k in asked]
    units = Units(np.concatenate([np.full(len(k), i) for i, k in enumerate(asked)]), np.concatenate(asked),
                  np.concatenate([x.targets[k] for x, k in zip(enc.examples, asked)]),
                  np.concatenate(foils),
                  np.concatenate([x.positions[k] for x, k in zip(enc.examples, asked)]))
    gaps = None
    if method == "integrated_gradients":
        parts, gaps = integrated_gradients(model, enc, units, n_steps, batch_size)
    elif method == "attention_rollout":
        parts = attention_rollout(model, enc, units, batch_size)
    else:
        parts = gradient_method(model, enc, units, method, batch_size)
    return _results(tokenizer, enc, units, parts, gaps, method, foil is not None)


def _vocabulary(model) -> int:
    """Rows of the language-modelling head: the token ids a foil may name."""
    weight = getattr(model.get_output_embeddings(), "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else int(model.config.vocab_size)


def _row(enc: SequenceEncoded, example: int, part: list[np.ndarray]) -> np.ndarray:
    """One unit's per-stream scores, the last stream cut short, as one full-width row (zeros after the cut)."""
    ids = enc.examples[example].ids
    cut = part[-1]
    return np.concatenate([*part[:-1], cut, np.zeros(len(ids[-1]) - len(cut), dtype=cut.dtype)])


def _results(tokenizer, enc, units, parts, gaps, method, contrastive) -> list[SequenceAttribution]:
    out = []
    for i, example in enumerate(enc.examples):
        mine = np.flatnonzero(units.example == i)
        scores = np.stack([_row(enc, i, parts[u]) for u in mine]).astype(np.float32)          # (n_rows, n_input)
        delta = relative = None
        if gaps is not None:
            gap = gaps[mine]
            delta = np.abs(scores.astype(np.float64).sum(1) - gap)
            with np.errstate(divide="ignore", invalid="ignore"):
                relative = np.where(gap != 0, delta / np.abs(gap), np.nan)
        offset = sum(len(x) for x in example.ids[:-1])
        out.append(SequenceAttribution(
            [t for ids in example.ids for t in tokenizer.convert_ids_to_tokens(ids.tolist())],
            {name: len(ids) for name, ids in zip(enc.streams, example.ids)},
            tokenizer.convert_ids_to_tokens(example.targets.tolist()), example.targets,
            offset + example.positions, units.target[mine], scores, method,
            units.foil[mine] if contrastive else None, delta, relative))
    return out


def _unit_batches(enc: SequenceEncoded, units: Units, batch_size: int) -> list[np.ndarray]:
    return length_batches([unit_length(enc, e, p) for e, p in zip(units.example, units.position)], batch_size)


def _function(z: torch.Tensor, units: Units, rows, device) -> torch.Tensor:
    return target_function(z, to_device(units.label[rows], device), to_device(units.foil[rows], device))


def _output_rule(z: torch.Tensor, units: Units, rows, device) -> torch.Tensor:
    """(R,) sum_v w_v z_v with w = integral_0^1 d f / d z (s z) ds held constant: LRP's relevance at the logits."""
    label = to_device(units.label[rows], device)
    foil = to_device(units.foil[rows], device)
    with torch.no_grad():
        alphas, weights = gauss_legendre(OUTPUT_RULE_NODES)
        mean_probs = torch.zeros_like(z)
        for a, w in zip(alphas.tolist(), weights.tolist()):
            mean_probs += w * (a * z).softmax(-1)                                    # d log-sum-exp / d z on the path
        against = torch.where((foil >= 0)[:, None],
                              torch.nn.functional.one_hot(foil.clamp(min=0), z.shape[1]).to(z.dtype), mean_probs)
        w_z = torch.nn.functional.one_hot(label, z.shape[1]).to(z.dtype) - against     # (R, V)
    return (w_z * z).sum(-1)


def gradient_method(model: nn.Module, enc: SequenceEncoded, units: Units, method: str, batch_size: int
                    ) -> list[list[np.ndarray]]:
    """Per unit, per stream: scores of gradient, grad_x_input or lrp."""
    device = model_device(model)
    parts: list = [None] * len(units)
    rules = conservative_rules(model) if method == "lrp" else nullcontext()
    objective = _output_rule if method == "lrp" else _function
    with sequence_taps(model, len(enc.streams)) as (tap, head), rules:
        tap.capture = True
        for rows in _unit_batches(enc, units, batch_size):
            per_stream = unit_ids(enc, units, rows, device)
            z = picked_logits(model, tap, head, model_inputs(enc, per_stream), units.position[rows])     # (R, V)
            leaves = tap.leaves()
            grads = torch.autograd.grad(objective(z, units, rows, device).sum(), leaves)               # (R, T_s, E)
            if method == "gradient":
                scores = [g.norm(dim=-1) for g in grads]
            else:
                scores = [(g * e.detach()).sum(-1) for g, e in zip(grads, leaves)]                    # (R, T_s)
            _store(parts, rows, per_stream, scores)
    return parts


def _store(parts: list, rows: np.ndarray, per_stream, scores: list[torch.Tensor]) -> None:
    host = [s.float().cpu().numpy() for s in scores]
    lengths = [mask.sum(1).cpu().numpy() for _, mask in per_stream]
    for r, u in enumerate(rows):
        parts[u] = [h[r, :n[r]] for h, n in zip(host, lengths)]


def integrated_gradients(model: nn.Module, enc: SequenceEncoded, units: Units, n_steps: int, batch_size: int
                         ) -> tuple[list[list[np.ndarray]], np.ndarray]:
    """Per unit, per stream: IG scores; and per unit the gap f(x) - f(baseline).

    The (unit, step) pairs are batched as the classifier's (example, step) pairs are
    (integrated_gradients.pair_batches: length-sorted, at most batch_size rows and
    MAX_TOKENS_PER_PASS padded tokens); each pass adds sum_d (e - b) w_step grad to its units'
    scores, so nothing larger than the batch is kept.
    """
    device = model_device(model)
    lengths = np.asarray([unit_length(enc, e, p) for e, p in zip(units.example, units.position)])
    order = np.argsort(lengths, kind="stable")
    alphas, weights = gauss_legendre(n_steps)
    totals: dict[int, list[torch.Tensor]] = {}
    gaps = np.zeros(len(units))
    with sequence_taps(model, len(enc.streams)) as (tap, head):
        for flat in pair_batches(lengths, 2, batch_size, MAX_TOKENS_PER_PASS):        # end points: (x, baseline)
            unit, end = order[flat // 2], flat % 2
            members, row_of = np.unique(unit, return_inverse=True)
            rows = to_device(row_of, device)
            real, base = unit_ids(enc, units, members, device), unit_ids(enc, units, members, device, baseline=True)
            tap.replacement = [torch.where(to_device(end, device)[:, None, None].bool(),
                                           tap.embed(s, b_ids)[rows], tap.embed(s, ids)[rows])
                               for s, ((ids, _), (b_ids, _)) in enumerate(zip(real, base))]
            with torch.no_grad(), torch.autocast(device.type, enabled=False):    # the delta is measured against these
                f = _function(picked_logits(model, tap, head, model_inputs(enc, real, rows), units.position[unit]),
                              units, unit, device).double().cpu().numpy()
            tap.replacement = None
            np.add.at(gaps, unit, np.where(end == 0, f, -f))
        for flat in pair_batches(lengths, n_steps, batch_size, MAX_TOKENS_PER_PASS):
            unit, step = order[flat // n_steps], flat % n_steps                       # (R,) each
            members, row_of = np.unique(unit, return_inverse=True)                    # U units in this batch
            rows = to_device(row_of, device)
            real, base = unit_ids(enc, units, members, device), unit_ids(enc, units, members, device, baseline=True)
            e_x = [tap.embed(s, ids) for s, (ids, _) in enumerate(real)]              # (U, T_s, E) each
            e_b = [tap.embed(s, ids) for s, (ids, _) in enumerate(base)]
            alpha = to_device(alphas[step], device)[:, None, None]                     # (R, 1, 1)
            paths = [(b[rows] + alpha.to(x.dtype) * (x[rows] - b[rows])).requires_grad_(True) for x, b in zip(e_x, e_b)]
            tap.replacement = paths
            z = picked_logits(model, tap, head, model_inputs(enc, real, rows), units.position[unit])     # (R, V)
            tap.replacement = None
            grads = torch.autograd.grad(_function(z, units, unit, device).sum(), paths)                # (R, T_s, E)
            w = to_device(weights[step], device)[:, None, None]
            lengths_of = [mask.sum(1).tolist() for _, mask in real]
            for m, (u, scores) in enumerate(zip(members, _per_member(grads, e_x, e_b, rows, w, len(members)))):
                scores = [t[:n[m]] for t, n in zip(scores, lengths_of)]
                totals[u] = [a + b for a, b in zip(totals[u], scores)] if u in totals else scores
    parts = [[t.float().cpu().numpy() for t in totals[u]] for u in range(len(units))]
    return parts, gaps


def _per_member(grads, e_x, e_b, rows: torch.Tensor, w: torch.Tensor, n_members: int) -> list[list[torch.Tensor]]:
    """Per member unit, per stream: sum over its steps of w (e - b) . grad, (T_s,)."""
    summed = []
    for g, x, b in zip(grads, e_x, e_b):
        contribution = ((x - b)[rows].to(g.dtype) * g * w.to(g.dtype)).sum(-1)       # (R, T_s)
        summed.append(torch.zeros(n_members, g.shape[1], dtype=g.dtype, device=g.device).index_add_(0, rows,
                                                                                                      contribution))
    return [[s[m] for s in summed] for m in range(n_members)]


def _rollout_encoder_decoder(encoder, decoder, cross) -> torch.Tensor:
    """(D, S + D): per decoder position, the flow from the source tokens and the decoder inputs."""
    r_enc = rollout(encoder)                                                        # (S, S)
    n_src, n_dec = r_enc.shape[0], decoder[0].shape[-1]
    eye = torch.eye(n_dec, dtype=torch.float64, device=r_enc.device)
    flow = torch.cat([torch.zeros(n_dec, n_src, dtype=torch.float64, device=r_enc.device), eye], 1)
    source = torch.cat([r_enc, torch.zeros(n_src, n_dec, dtype=torch.float64, device=r_enc.device)], 1)
    for self_attn, cross_attn in zip(decoder, cross):
        mixed = self_attn.double().mean(0) + eye
        flow = (mixed / mixed.sum(-1, keepdim=True)) @ flow
        flow = 0.5 * flow + 0.5 * cross_attn.double().mean(0) @ source
    return flow


def attention_rollout(model: nn.Module, enc: SequenceEncoded, units: Units, batch_size: int) -> list[list[np.ndarray]]:
    """Per unit, per stream: the rollout row of its predicting position (see the module docstring)."""
    device = model_device(model)
    whole = Units(np.arange(len(enc.examples)), np.zeros(len(enc.examples), np.int64),
                  np.zeros(len(enc.examples), np.int64), np.full(len(enc.examples), -1),
                  np.asarray([len(x.ids[-1]) - 1 for x in enc.examples]))                    # every example uncut
    matrices: dict[int, torch.Tensor] = {}
    with torch.no_grad(), sequence_taps(model, len(enc.streams)) as (tap, head):
        for members in _unit_batches(enc, whole, batch_size):
            per_stream = unit_ids(enc, whole, members, device)
            head.positions = to_device(np.zeros(len(members), np.int64), device)     # logits unused: one position
            out = tap.run(model, model_inputs(enc, per_stream), output_attentions=True)
            head.positions = None
            attentions = getattr(out, "decoder_attentions", None) or getattr(out, "attentions", None)
            if not attentions or attentions[0] is None:
                raise UnsupportedModelError(f"{type(model).__name__} returned no attention weights; load it with "
                                            'attn_implementation="eager" (other kernels return none)')
            lengths = [mask.sum(1).tolist() for _, mask in per_stream]
            for b, i in enumerate(members):
                n = [x[b] for x in lengths]
                if len(per_stream) == 1:
                    matrices[i] = rollout([a[b, :, :n[0], :n[0]] for a in attentions])
                else:
                    matrices[i] = _rollout_encoder_decoder([a[b, :, :n[0], :n[0]] for a in out.encoder_attentions],
                                                           [a[b, :, :n[1], :n[1]] for a in attentions],
                                                           [a[b, :, :n[1], :n[0]] for a in out.cross_attentions])
    parts = []
    for i, position in zip(units.example, units.position):
        row = matrices[i][position].float().cpu().numpy()
        sizes = [len(x) for x in enc.examples[i].ids]
        split = np.split(row, np.cumsum(sizes)[:-1]) if len(sizes) > 1 else [row]
        parts.append([*split[:-1], split[-1][:position + 1]])
    return parts
