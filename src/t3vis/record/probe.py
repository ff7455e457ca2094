"""One fused pass over the probe set: hidden states, outputs, head importance, attention.

A single forward with hidden states and attention weights, gates on every head, then one
`torch.autograd.grad` to the gated head outputs: the per-example gradient of the loss with
respect to each head's gate (Michel et al. 2019) without touching any parameter's `.grad`.
That gradient and the batching live in t3vis.models, shared with the head-importance analysis.
The model is left as it was found: training flags restored, hooks removed.

A layer is one application of a block (t3vis.models.structure): where one block serves every
layer (ALBERT) the hidden states, gate gradients and attention maps still come one per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from t3vis.errors import InvalidInputError
from t3vis.models.batches import Labels, length_sorted_batches, num_labels, unwrap, validate_examples
from t3vis.models.head_gradients import capture_head_contexts
from t3vis.models.structure import AttentionLayout, eval_mode, find_attention_layout
from t3vis.record.attention_stats import AttentionStats


@dataclass
class ProbeResult:
    """Everything one probe pass measures, for the examples it was given, in their order."""

    hidden: np.ndarray          # (L+1, n, d) float16
    logits: np.ndarray          # (n, C) float32
    loss: np.ndarray            # (n,) float32, NaN where the model's output was not finite
    gate_grads: np.ndarray      # (n, L, H) float32, signed d loss / d gate; 0 for NaN examples
    attention: AttentionStats

    @property
    def probs(self) -> np.ndarray:
        z = self.logits - np.nanmax(self.logits, axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    @property
    def nan(self) -> np.ndarray:
        return ~np.isfinite(self.logits).all(axis=1) | ~np.isfinite(self.loss)


def resolve_pooling(pooling: str, tokenizer) -> str:
    if pooling == "auto":
        # encoders summarise into a leading [CLS]/<s>; decoders into the last token
        return "cls" if getattr(tokenizer, "cls_token", None) is not None else "last"
    if pooling not in ("cls", "mean", "last"):
        raise InvalidInputError(f"unknown pooling {pooling!r}; choose cls, mean, last or auto")
    return pooling


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """hidden (B, T, d), mask (B, T) -> (B, d)."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        m = mask[..., None].to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (mask.long() * positions).argmax(1)  # last non-padding position, any padding side
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def validate_probe_set(texts: Sequence[str], labels: Labels, n_classes: int) -> np.ndarray:
    return validate_examples(texts, labels, n_classes, what="probe set")


def _separator_ids(tokenizer) -> list[int]:
    ids = {getattr(tokenizer, name, None) for name in ("sep_token_id", "eos_token_id")}
    return sorted(i for i in ids if i is not None)


def probe(model: nn.Module, tokenizer, texts: Sequence[str], labels: Labels, *,
          pooling: str = "auto", batch_size: int = 32, max_length: int = 128, thumbnail_size: int = 32,
          layout: AttentionLayout | None = None, hidden_out: np.ndarray | None = None,
          progress: Callable[[int], None] | None = None) -> ProbeResult:
    """Run the fused probe pass. hidden_out, if given, is filled in place (a memory-mapped file)."""
    model = unwrap(model)
    n_classes = num_labels(model)
    classes = validate_probe_set(texts, labels, n_classes)
    layout = layout or find_attention_layout(model)
    pooling = resolve_pooling(pooling, tokenizer)
    device = next(model.parameters()).device
    L, H, n = layout.num_layers, layout.num_heads, len(texts)

    hidden = hidden_out if hidden_out is not None else np.empty((L + 1, n, layout.hidden_size), np.float16)
    logits_all = np.empty((n, n_classes), np.float32)
    loss_all = np.empty(n, np.float32)
    grads_all = np.zeros((n, L, H), np.float32)
    stats = AttentionStats(L, H, thumbnail_size)
    separators = torch.tensor(_separator_ids(tokenizer), device=device)

    # sorted by length so each batch pads little; results are scattered back to input order
    batches = length_sorted_batches(tokenizer, texts, classes, batch_size=batch_size, max_length=max_length,
                                    device=device)
    with eval_mode(model), torch.enable_grad():
        for rows, enc, gold in batches:
            out = _probe_batch(model, layout, enc, gold, pooling, stats, separators)
            hidden[:, rows] = out["hidden"]
            logits_all[rows] = out["logits"]
            loss_all[rows] = out["loss"]
            grads_all[rows] = out["gate_grads"]
            if progress is not None:
                progress(len(rows))
    return ProbeResult(hidden, logits_all, loss_all, grads_all, stats)


def _probe_batch(model, layout, enc, gold, pooling, stats, separators) -> dict[str, np.ndarray]:
    with capture_head_contexts(layout, gold.device) as contexts:
        out = model(**enc, output_hidden_states=True, output_attentions=True)
    logits = out.logits.float()
    # under a device_map the logits come from the last device, the hidden states from each block's own
    loss = nn.functional.cross_entropy(logits, gold.to(logits.device), reduction="none")
    gate_grads = contexts.gate_gradients(loss)                             # (B, L, H)

    mask = enc["attention_mask"].bool()
    with torch.no_grad():
        separator = torch.isin(enc["input_ids"], separators) & mask
        separator[:, 0] = False  # GPT-2's eos doubles as bos; the first token has its own summary
        for layer, attn in enumerate(out.attentions):
            stats.add_layer(layer, attn, mask, separator)
        states = [h.detach().to(mask.device) for h in out.hidden_states]
        pooled = torch.stack([pool(h, mask, pooling) for h in states])          # (L+1, B, d)
    return {
        "hidden": pooled.to(torch.float16).cpu().numpy(),
        "logits": logits.detach().cpu().numpy(),
        "loss": loss.detach().cpu().numpy(),
        "gate_grads": gate_grads.detach().cpu().numpy(),
    }
