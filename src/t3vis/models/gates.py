"""Head gates: scale each head's slice of the attention output projection's input.

transformers 5 ignores `head_mask`, so gating is a forward pre-hook. Gates live in a
context manager and every hook comes off in `finally`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch

from t3vis.models.structure import AttentionLayout


@contextmanager
def gated_heads(layout: AttentionLayout, gates: torch.Tensor,
                on_gated: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> Iterator[None]:
    """Multiply head h of layer l by gates[l, h] during every forward pass inside the block.

    on_gated(layer, context, gated), if given, sees each layer's context (..., H * d) before
    and after gating, so a caller can take gradients with respect to the gated tensor.
    """
    H, d = layout.num_heads, layout.head_dim

    def make_hook(layer: int):
        def hook(module, args):
            context = args[0]
            shape = context.shape
            gated = (context.view(*shape[:-1], H, d) * gates[layer].to(context.dtype).view(H, 1)).view(shape)
            if on_gated is not None:
                on_gated(layer, context, gated)
            return (gated, *args[1:])
        return hook

    handles = [proj.register_forward_pre_hook(make_hook(i)) for i, proj in enumerate(layout.output_projections)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def mask_to_gates(layout: AttentionLayout, masked_heads: Mapping[int, Sequence[int]] | None,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """(L, H) gates: 0 for every masked head, 1 elsewhere."""
    gates = torch.ones(layout.num_layers, layout.num_heads, device=device)
    for layer, heads in (masked_heads or {}).items():
        gates[int(layer), list(heads)] = 0.0
    return gates
