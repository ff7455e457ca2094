"""Head gates: scale each head's slice of the attention output projection's input.

transformers 5 ignores `head_mask`, so gating is a forward pre-hook. A layer is "the i-th run
of projection P within one forward pass" (t3vis.models.structure): each hook counts its
projection's runs and applies gate row i on the i-th, and a pre-hook on the model restarts the
counts at every forward pass. Where one block serves every layer (ALBERT) that tells the layers
apart; elsewhere every projection runs once. Each layer's gate row is put on the device of the
projection it scales (models split across devices with a `device_map`). Gates live in a context
manager and every hook comes off in `finally`. `masked_stacks` gates the masked heads of every
stack of a model at once (an encoder-decoder's encoder, decoder and cross-attention).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from t3vis.models.structure import AttentionLayout, layer_devices

OnGated = Callable[[int, torch.Tensor, torch.Tensor], None]


class _RunCounter:
    """How often each gated projection has run in the current forward pass."""

    def __init__(self) -> None:
        self.runs: dict[int, int] = {}

    def restart(self, module: nn.Module, args) -> None:
        self.runs.clear()

    def next_run(self, projection: nn.Module) -> int:
        run = self.runs.get(id(projection), 0)
        self.runs[id(projection)] = run + 1
        return run


@contextmanager
def gated_heads(layout: AttentionLayout, gates: torch.Tensor, on_gated: OnGated | None = None) -> Iterator[None]:
    """Multiply head h of layer l by gates[l, h] during every forward pass inside the block.

    on_gated(layer, context, gated), if given, sees each layer's context (..., H * d) before
    and after gating, so a caller can take gradients with respect to the gated tensor.
    """
    H, d = layout.num_heads, layout.head_dim
    rows = [gates[layer].to(device) for layer, device in enumerate(layer_devices(layout, gates.device))]
    counter = _RunCounter()

    def make_hook(layers: list[int]):
        def hook(module, args):
            run = counter.next_run(module)
            if run >= len(layers):
                raise RuntimeError(f"{type(module).__name__} ran {run + 1} times in one forward pass of "
                                   f"{type(layout.root).__name__}, but the layout has {len(layers)} layers on "
                                   "it; call the model itself (not a submodule) inside the gates")
            layer = layers[run]
            context = args[0]
            shape = context.shape
            gated = (context.view(*shape[:-1], H, d) * rows[layer].to(context.dtype).view(H, 1)).view(shape)
            if on_gated is not None:
                on_gated(layer, context, gated)
            return (gated, *args[1:])
        return hook

    handles = [layout.root.register_forward_pre_hook(counter.restart)]
    try:
        for proj, layers in layout.layers_by_projection().items():
            handles.append(proj.register_forward_pre_hook(make_hook(layers)))
        yield
    finally:
        for h in handles:
            h.remove()


def mask_to_gates(layout: AttentionLayout, masked_heads: Mapping[int, Sequence[int]] | None,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """(L, H) gates: 0 for every masked head, 1 elsewhere. gated_heads puts each row on its layer's device."""
    gates = torch.ones(layout.num_layers, layout.num_heads, device=device)
    for layer, heads in (masked_heads or {}).items():
        gates[int(layer), list(heads)] = 0.0
    return gates


@contextmanager
def masked_stacks(layouts: Sequence[AttentionLayout], masked_heads: Mapping[str, Mapping[int, Sequence[int]]],
                  device: torch.device | str | None = None) -> Iterator[None]:
    """Every head in masked_heads ({stack name: {layer: heads}}) gated to zero inside the block.

    A stack with nothing masked gets no hooks: a gate of 1 changes nothing, so it is left out.
    Each stack counts its own projections' runs, restarted by every forward pass of the model.
    """
    with ExitStack() as stack:
        for layout in layouts:
            heads = masked_heads.get(layout.stack)
            if heads:
                stack.enter_context(gated_heads(layout, mask_to_gates(layout, heads, device)))
        yield
