"""Find a Transformer's attention blocks from its structure, never from attribute names.

One forward pass on two dummy tokens, with hooks on every module of the first block:
- the blocks are the ModuleList whose length is the config's number of layers;
- a block's attention module is its outermost proper submodule whose output carries the
  attention weights, a (batch, heads, query, key) tensor;
- the attention output projection is the last Linear (or GPT-2 Conv1D) to run inside it:
  its input is the heads' concatenated context, so one head is one slice of that input.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from t3vis.errors import UnsupportedModelError


@dataclass(frozen=True)
class AttentionLayout:
    blocks: tuple[nn.Module, ...]          # one per layer
    output_projections: tuple[nn.Module, ...]  # one per layer; input (..., heads * head_dim)
    num_heads: int
    head_dim: int
    hidden_size: int

    @property
    def num_layers(self) -> int:
        return len(self.blocks)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside the block; every module's own training flag restored after it."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _num_layers(config) -> int:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("num_hidden_layers", "n_layer", "n_layers", "num_layers"):
        value = getattr(text, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise UnsupportedModelError(f"{type(config).__name__} names no number of layers")


def _is_projection(module: nn.Module) -> bool:
    # GPT-2's Conv1D is a Linear with transposed weight: weight (in, out), nf = out
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _projection_in_features(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise UnsupportedModelError(f"{type(module).__name__} projects attention output without a weight tensor")
    return int(weight.shape[0])


def _find_blocks(model: nn.Module, num_layers: int) -> nn.ModuleList:
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == num_layers
                  and len({type(c) for c in m}) == 1]
    if not candidates:
        raise UnsupportedModelError(
            f"{type(model).__name__}: found no list of {num_layers} identical blocks; t3vis needs one "
            "module per layer (models that share one block across layers, like ALBERT, are not supported yet)")
    # the outermost one holds the transformer blocks (inner lists are smaller parts)
    return candidates[0]


def _dummy_inputs(model: nn.Module) -> dict:
    device = next(model.parameters()).device
    config = model.config
    vocab = int(getattr(config, "vocab_size", 2) or 2)
    ids = torch.tensor([[min(1, vocab - 1), min(2, vocab - 1), min(3, vocab - 1)]], device=device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _is_attention_weights(t, num_tokens: int) -> bool:
    return torch.is_tensor(t) and t.dim() == 4 and t.shape[-1] == num_tokens and t.shape[-2] == num_tokens


def find_attention_layout(model: nn.Module) -> AttentionLayout:
    """Locate every layer's attention output projection and the head geometry."""
    blocks = _find_blocks(model, _num_layers(model.config))
    first = blocks[0]
    inputs = _dummy_inputs(model)
    num_tokens = inputs["input_ids"].shape[1]
    carries_weights: dict[str, tuple[int, ...]] = {}
    projection_order: list[str] = []
    names = {m: n for n, m in first.named_modules()}
    handles = []

    def after(module, args, output):
        name = names[module]
        outs = output if isinstance(output, tuple) else (output,)
        for t in outs:
            if _is_attention_weights(t, num_tokens):
                carries_weights[name] = tuple(t.shape)
        if _is_projection(module):
            projection_order.append(name)

    for module in names:
        handles.append(module.register_forward_hook(after))
    try:
        with eval_mode(model), torch.no_grad():
            model(**inputs, output_attentions=True)
    finally:
        for h in handles:
            h.remove()

    proper = [n for n in carries_weights if n]  # "" is the block itself
    if not proper:
        raise UnsupportedModelError(
            f"{type(model).__name__}: no module in a block returned attention weights; load the model "
            'with attn_implementation="eager" (other kernels return none)')
    attention_name = min(proper, key=lambda n: n.count("."))  # outermost
    num_heads = carries_weights[attention_name][1]
    inside = [n for n in projection_order if n.startswith(attention_name + ".")]
    if not inside:
        raise UnsupportedModelError(f"{type(model).__name__}: the attention module {attention_name!r} "
                                    "runs no linear projection")
    projection_name = inside[-1]
    in_features = _projection_in_features(first.get_submodule(projection_name))
    if in_features % num_heads:
        raise UnsupportedModelError(f"{type(model).__name__}: projection {projection_name!r} has {in_features} "
                                    f"inputs, not a multiple of {num_heads} heads")
    projections = tuple(block.get_submodule(projection_name) for block in blocks)
    hidden = int(getattr(model.config, "hidden_size", None) or getattr(model.config, "n_embd", None)
                 or getattr(model.config, "dim", None) or in_features)
    return AttentionLayout(tuple(blocks), projections, num_heads, in_features // num_heads, hidden)
