"""Per-example gradient of the loss with respect to every head's gate (Michel et al. 2019).

Every head's output (its slice of the attention output projection's input) is multiplied
by a gate g = 1. By the chain rule, for example b, layer l, head h:

    d loss_b / d g[l, h] = sum over positions t and head dims k of  a[b, t, h, k] * d loss_b / d (g a)[b, t, h, k]

where a is the head's context (the activation) before gating. One `torch.autograd.grad` of
the summed loss to the gated contexts gives it for every example at once: in eval mode
examples are independent, so the gradient at example b's context is that of b's own loss.
No parameter's `.grad` is touched. Shared by the probe pass (record) and head importance
(analysis), so both compute the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from t3vis.models.gates import gated_heads
from t3vis.models.structure import AttentionLayout


class HeadContexts:
    """The contexts one forward pass fed to the gated heads, before and after gating, per layer."""

    def __init__(self, layout: AttentionLayout):
        self.layout = layout
        self.by_layer: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(self, layer: int, context: torch.Tensor, gated: torch.Tensor) -> None:
        if layer in self.by_layer:
            raise RuntimeError(f"layer {layer} ran twice: run exactly one forward pass inside capture_head_contexts")
        self.by_layer[layer] = (context, gated)

    def gate_gradients(self, loss: torch.Tensor) -> torch.Tensor:
        """loss (B,) per example -> (B, L, H) signed d loss / d gate; 0 for examples whose loss is not finite."""
        if len(self.by_layer) != self.layout.num_layers:
            raise RuntimeError(f"captured {len(self.by_layer)} layers for a {self.layout.num_layers}-layer model: "
                               "run exactly one forward pass inside capture_head_contexts")
        pairs = [self.by_layer[layer] for layer in range(self.layout.num_layers)]
        finite = torch.isfinite(loss)
        grads = torch.autograd.grad(torch.where(finite, loss, 0.0).sum(), [g for _, g in pairs],
                                    allow_unused=True)
        B, H, d = loss.shape[0], self.layout.num_heads, self.layout.head_dim
        per_layer = []
        for (context, _), grad in zip(pairs, grads):
            if grad is None:                                   # a layer the loss does not depend on
                per_layer.append(torch.zeros(B, H, device=loss.device))
                continue
            prod = (context.detach() * grad).view(B, -1, H, d)   # (B, T, H, d), on the layer's own device
            per_layer.append(prod.sum((1, 3)).float().to(loss.device))
        gate_grads = torch.stack(per_layer, 1)                    # (B, L, H)
        return torch.where(finite[:, None, None], torch.nan_to_num(gate_grads), 0.0)


@contextmanager
def capture_head_contexts(layout: AttentionLayout, device: torch.device | str) -> Iterator[HeadContexts]:
    """Gate every head at 1 for one forward pass inside the block; hooks come off after it.

    Grad mode must be on (the caller's `torch.enable_grad()`); parameters need not require grad.
    gated_heads puts each layer's gate row on the device of the projection it scales.
    """
    gates = torch.ones(layout.num_layers, layout.num_heads, device=device, requires_grad=True)
    captured = HeadContexts(layout)
    with gated_heads(layout, gates, on_gated=captured.keep):
        yield captured
