"""Capture every layer's attention weights, per stack, with forward hooks on the attention modules.

Model outputs are not relied on: T5 returns empty attention tuples in transformers 5, and an
encoder-decoder names its three stacks' maps differently. The layout knows which module's
output carries each layer's weights (and which run of a shared module is which layer).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from t3vis.models.structure import AttentionLayout, weights_at


class AttentionMaps:
    """The (B, H, Tq, Tk) weights of one forward pass, per stack and layer."""

    def __init__(self, layouts: Sequence[AttentionLayout]):
        self.by_stack: dict[str, dict[int, torch.Tensor]] = {layout.stack: {} for layout in layouts}

    def layers(self, layout: AttentionLayout) -> list[torch.Tensor]:
        maps = self.by_stack[layout.stack]
        if len(maps) != layout.num_layers:
            raise RuntimeError(f"captured {len(maps)} attention maps of the {layout.num_layers}-layer {layout.stack}: "
                               'load the model with attn_implementation="eager" and pass output_attentions=True')
        return [maps[layer] for layer in range(layout.num_layers)]


@contextmanager
def capture_attention(layouts: Sequence[AttentionLayout]) -> Iterator[AttentionMaps]:
    """Keep the attention weights of every layer of every stack for one forward pass inside the block."""
    maps = AttentionMaps(layouts)
    handles = []

    def make_hook(stack: str, layers: list[int], index: int):
        runs = {"count": 0}

        def hook(module, args, output):
            weights = weights_at(output, index)
            if weights is not None:
                maps.by_stack[stack][layers[runs["count"] % len(layers)]] = weights.detach()
                runs["count"] += 1
        return hook

    try:
        for layout in layouts:
            index = {id(site.attention): site.weights_index for site in layout.layers}
            for module, layers in layout.layers_by_attention().items():
                handles.append(module.register_forward_hook(make_hook(layout.stack, layers, index[id(module)])))
        yield maps
    finally:
        for h in handles:
            h.remove()
