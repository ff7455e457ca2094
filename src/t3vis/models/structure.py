"""Find a Transformer's attention blocks from its structure, never from attribute names.

One forward pass on three dummy tokens, with hooks on every module, gives a trace: which
modules ran, in which order, and which returned attention weights. From it:
- the layers are the applications of the blocks, in the order they ran. Usually the blocks
  are a ModuleList of the config's number of layers, each run once; a model that shares one
  block across layers (ALBERT) runs one module that many times, and layer l is its l-th run;
- a block's attention module is its outermost proper submodule whose output carries the
  attention weights, a (batch, heads, query, key) tensor;
- the attention output projection is the last Linear (or GPT-2 Conv1D) to run inside it:
  its input is the heads' concatenated context, so one head is one slice of that input.

So every layer is "the `call`-th run, within one forward pass, of projection P": head gates
(t3vis.models.gates) count the runs of each projection and need no other knowledge of the family.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain

import torch
from torch import nn

from t3vis.errors import UnsupportedModelError


@dataclass(frozen=True)
class LayerSite:
    """One layer: the `call`-th run of `block` (and so of `projection`) within one forward pass.

    call is 0 for every layer of a model with one block per layer; 0..L-1 when one block is shared.
    """

    block: nn.Module
    projection: nn.Module      # the attention output projection inside block; input (..., heads * head_dim)
    call: int


@dataclass(frozen=True)
class AttentionLayout:
    layers: tuple[LayerSite, ...]          # one per layer, in the order they run
    num_heads: int
    head_dim: int
    hidden_size: int
    root: nn.Module = field(repr=False)    # the model whose forward pass starts a new count of runs

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def blocks(self) -> tuple[nn.Module, ...]:
        return tuple(site.block for site in self.layers)

    @property
    def output_projections(self) -> tuple[nn.Module, ...]:
        """One per layer; the same module repeated where layers share a block."""
        return tuple(site.projection for site in self.layers)

    @property
    def shares_blocks(self) -> bool:
        return len({id(site.block) for site in self.layers}) < self.num_layers

    def layers_by_projection(self) -> dict[nn.Module, list[int]]:
        """projection -> the layer of each of its runs in one forward pass (index = run)."""
        runs: dict[nn.Module, dict[int, int]] = {}
        for layer, site in enumerate(self.layers):
            runs.setdefault(site.projection, {})[site.call] = layer
        return {proj: [by_call[c] for c in sorted(by_call)] for proj, by_call in runs.items()}


def module_device(module: nn.Module) -> torch.device | None:
    """The device of a module's own weights (first parameter, else first buffer); None if it has none.

    Under a `device_map` each block lives on its own device: what scales a block's activations
    must be created there.
    """
    for tensor in chain(module.parameters(), module.buffers()):   # lazily: stop at the first
        return tensor.device
    return None


def layer_devices(layout: AttentionLayout, default: torch.device | str) -> tuple[torch.device, ...]:
    """Each layer's device: that of its output projection's weights, `default` for a weightless one."""
    return tuple(module_device(site.projection) or torch.device(default) for site in layout.layers)


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


def _dummy_inputs(model: nn.Module) -> dict:
    device = next(model.parameters()).device
    config = model.config
    vocab = int(getattr(config, "vocab_size", 2) or 2)
    ids = torch.tensor([[min(1, vocab - 1), min(2, vocab - 1), min(3, vocab - 1)]], device=device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _is_attention_weights(t, num_tokens: int) -> bool:
    return torch.is_tensor(t) and t.dim() == 4 and t.shape[-1] == num_tokens and t.shape[-2] == num_tokens


@dataclass
class _Trace:
    """What one forward pass ran: every module call in start order, and what the calls returned."""

    calls: list[nn.Module] = field(default_factory=list)
    weights_shape: dict[nn.Module, tuple[int, ...]] = field(default_factory=dict)  # returned attention weights
    projections_done: list[nn.Module] = field(default_factory=list)                # in the order they finished
    attention_maps: int | None = None       # len(output.attentions), where the model returns it
    hidden_states: int | None = None        # len(output.hidden_states), where the model returns it

    def count(self, module: nn.Module) -> int:
        return sum(1 for m in self.calls if m is module)


def _trace(model: nn.Module) -> _Trace:
    inputs = _dummy_inputs(model)
    num_tokens = inputs["input_ids"].shape[1]
    trace = _Trace()

    def before(module, args):
        trace.calls.append(module)

    def after(module, args, output):
        outs = output if isinstance(output, tuple) else (output,)
        for t in outs:
            if _is_attention_weights(t, num_tokens):
                trace.weights_shape[module] = tuple(t.shape)
        if _is_projection(module):
            trace.projections_done.append(module)

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))
    try:
        with eval_mode(model), torch.no_grad():
            out = model(**inputs, output_attentions=True, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    for name in ("attention_maps", "hidden_states"):
        maps = getattr(out, "attentions" if name == "attention_maps" else "hidden_states", None)
        if isinstance(maps, (tuple, list)):
            setattr(trace, name, len(maps))
    return trace


def _listed_blocks(model: nn.Module, num_layers: int, trace: _Trace) -> list[tuple[nn.Module, int]] | None:
    """A ModuleList of num_layers blocks of one type, each run once: block l is layer l."""
    counts = Counter(id(m) for m in trace.calls)
    for m in model.modules():   # outermost first: it holds the transformer blocks (inner lists are parts)
        if (isinstance(m, nn.ModuleList) and len(m) == num_layers and len({type(c) for c in m}) == 1
                and all(counts[id(c)] == 1 for c in m)):
            return [(block, 0) for block in m]
    return None


def _shared_blocks(model: nn.Module, num_layers: int, trace: _Trace) -> list[tuple[nn.Module, int]] | None:
    """The outermost module type that runs num_layers times in all and holds attention: its runs, in order."""
    depth = {m: name.count(".") for name, m in model.named_modules() if name}   # the model itself is no block
    holds_attention = {m for m in depth if any(c is not m and c in trace.weights_shape for c in m.modules())}
    runs_per_type = Counter(type(m) for m in trace.calls if m in depth)
    kinds = {type(m) for m in holds_attention if runs_per_type[type(m)] == num_layers}
    if not kinds:
        return None
    outermost = min(kinds, key=lambda k: min(d for m, d in depth.items() if type(m) is k))
    seen: Counter[int] = Counter()
    applications = []
    for m in trace.calls:
        if type(m) is outermost:
            applications.append((m, seen[id(m)]))
            seen[id(m)] += 1
    return applications


def _find_applications(model: nn.Module, num_layers: int, trace: _Trace) -> list[tuple[nn.Module, int]]:
    found = _listed_blocks(model, num_layers, trace) or _shared_blocks(model, num_layers, trace)
    if not found:
        raise UnsupportedModelError(
            f"{type(model).__name__}: found no list of {num_layers} identical blocks, nor one block run "
            f"{num_layers} times per forward pass; t3vis needs one attention block application per layer")
    return found


def _attention_name(model: nn.Module, first: nn.Module, trace: _Trace) -> str:
    names = {m: n for n, m in first.named_modules()}
    proper = [n for m, n in names.items() if n and m in trace.weights_shape]  # "" is the block itself
    if not proper:
        raise UnsupportedModelError(
            f"{type(model).__name__}: no module in a block returned attention weights; load the model "
            'with attn_implementation="eager" (other kernels return none)')
    return min(proper, key=lambda n: n.count("."))  # outermost


def _projection_name(model: nn.Module, first: nn.Module, attention_name: str, trace: _Trace) -> str:
    names = {m: n for n, m in first.named_modules()}
    inside = [names[m] for m in trace.projections_done if names.get(m, "").startswith(attention_name + ".")]
    if not inside:
        raise UnsupportedModelError(f"{type(model).__name__}: the attention module {attention_name!r} "
                                    "runs no linear projection")
    return inside[-1]


def _check_one_run_per_layer(model: nn.Module, layers: tuple[LayerSite, ...], trace: _Trace) -> None:
    """Gates find a layer by counting its projection's runs: that count and the outputs must match."""
    L = len(layers)
    for proj in {site.projection for site in layers}:
        expected = sum(1 for site in layers if site.projection is proj)
        if trace.count(proj) != expected:
            raise UnsupportedModelError(
                f"{type(model).__name__}: the attention output projection {type(proj).__name__} ran "
                f"{trace.count(proj)} times in one forward pass, but {expected} layers use it; "
                "t3vis needs one attention module per layer")
    if trace.attention_maps is not None and trace.attention_maps != L:
        raise UnsupportedModelError(
            f"{type(model).__name__} returned {trace.attention_maps} attention maps for {L} layers; "
            "t3vis needs one attention module per layer (e.g. ALBERT with inner_group_num=1)")
    if trace.hidden_states is not None and trace.hidden_states != L + 1:
        raise UnsupportedModelError(
            f"{type(model).__name__} returned {trace.hidden_states} hidden states for {L} layers; "
            f"t3vis needs {L + 1} (the embeddings and one per layer)")


def find_attention_layout(model: nn.Module) -> AttentionLayout:
    """Locate every layer's attention output projection, which run of it is which layer, and the head geometry."""
    trace = _trace(model)
    applications = _find_applications(model, _num_layers(model.config), trace)
    first = applications[0][0]
    attention_name = _attention_name(model, first, trace)
    num_heads = trace.weights_shape[first.get_submodule(attention_name)][1]
    projection_name = _projection_name(model, first, attention_name, trace)
    in_features = _projection_in_features(first.get_submodule(projection_name))
    if in_features % num_heads:
        raise UnsupportedModelError(f"{type(model).__name__}: projection {projection_name!r} has {in_features} "
                                    f"inputs, not a multiple of {num_heads} heads")
    layers = tuple(LayerSite(block, block.get_submodule(projection_name), call) for block, call in applications)
    _check_one_run_per_layer(model, layers, trace)
    hidden = int(getattr(model.config, "hidden_size", None) or getattr(model.config, "n_embd", None)
                 or getattr(model.config, "dim", None) or in_features)
    return AttentionLayout(layers, num_heads, in_features // num_heads, hidden, root=model)
