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

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

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
        return stack_gate_gradients([self], loss)[0]

    def _pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if len(self.by_layer) != self.layout.num_layers:
            raise RuntimeError(f"captured {len(self.by_layer)} layers for a {self.layout.num_layers}-layer "
                               f"{self.layout.stack}: run exactly one forward pass inside capture_head_contexts")
        return [self.by_layer[layer] for layer in range(self.layout.num_layers)]

    def _from_grads(self, pairs, grads, finite: torch.Tensor) -> torch.Tensor:
        B, H, d = finite.shape[0], self.layout.num_heads, self.layout.head_dim
        per_layer = []
        for (context, _), grad in zip(pairs, grads):
            if grad is None:                                   # a layer the loss does not depend on
                per_layer.append(torch.zeros(B, H, device=finite.device))
                continue
            prod = (context.detach() * grad).view(B, -1, H, d)   # (B, T, H, d), on the layer's own device
            per_layer.append(prod.sum((1, 3)).float().to(finite.device))
        gate_grads = torch.stack(per_layer, 1)                    # (B, L, H)
        return torch.where(finite[:, None, None], torch.nan_to_num(gate_grads), 0.0)


def stack_gate_gradients(contexts: Sequence[HeadContexts], loss: torch.Tensor) -> list[torch.Tensor]:
    """Every stack's (B, L, H) gate gradients from one `torch.autograd.grad` of the summed loss."""
    pairs = [c._pairs() for c in contexts]
    finite = torch.isfinite(loss)
    gated = [g for stack in pairs for _, g in stack]
    grads = torch.autograd.grad(torch.where(finite, loss, 0.0).sum(), gated, allow_unused=True)
    out, start = [], 0
    for c, stack in zip(contexts, pairs):
        out.append(c._from_grads(stack, grads[start:start + len(stack)], finite))
        start += len(stack)
    return out


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


@contextmanager
def capture_stack_contexts(layouts: Sequence[AttentionLayout],
                           device: torch.device | str) -> Iterator[list[HeadContexts]]:
    """capture_head_contexts for every stack of a model at once (one forward pass inside the block)."""
    with ExitStack() as stack:
        yield [stack.enter_context(capture_head_contexts(layout, device)) for layout in layouts]
