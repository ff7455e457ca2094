"""Find a Transformer's attention stacks from its structure, never from attribute names.

One forward pass on dummy tokens, with hooks on every module, gives a trace: which modules
ran, in which order, and which returned attention weights, a (batch, heads, query, key)
tensor. An encoder-decoder is traced with a source of 5 tokens and a target of 3, so the
shape of the weights tells the stacks apart: (5, 5) is encoder self-attention, (3, 3)
decoder self-attention, (3, 5) cross-attention. A single-stack model is a "decoder" when its
weights are causal (the first query gives the later keys nothing), an "encoder" otherwise.
For each stack:
- the layers are the applications of its blocks, in the order they ran. Usually the blocks
  are a ModuleList of identical blocks, each run once; a model that shares one block across
  layers (ALBERT) runs one module that many times, and layer l is its l-th run;
- a block's attention module is its outermost proper submodule whose output carries that
  stack's attention weights;
- the attention output projection is the last Linear (or GPT-2 Conv1D) to run inside it:
  its input is the heads' concatenated context, so one head is one slice of that input;
- its hidden states are the model output's tuple of layers + 1 states as long as the stack's
  queries (None for cross-attention, whose states are the decoder's).

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

STACKS = ("encoder", "decoder", "cross")
# the token streams a stack reads its queries and keys from: input_ids, or an encoder-decoder's
# decoder_input_ids (t3vis.tasks.base.Batch.streams uses the same names)
INPUT, DECODER_INPUT = "input", "decoder_input"


@dataclass(frozen=True)
class LayerSite:
    """One layer: the `call`-th run of `block` (and so of `attention` and `projection`) within one forward pass.

    call is 0 for every layer of a model with one block per layer; 0..L-1 when one block is shared.
    """

    block: nn.Module
    projection: nn.Module      # the attention output projection inside block; input (..., heads * head_dim)
    call: int
    attention: nn.Module | None = None   # the module whose output carries this layer's attention weights
    weights_index: int = 0               # where among that module's outputs the weights are


@dataclass(frozen=True)
class AttentionLayout:
    """One stack of attention layers: encoder self-attention, decoder self-attention or cross-attention."""

    layers: tuple[LayerSite, ...]          # one per layer, in the order they run
    num_heads: int
    head_dim: int
    hidden_size: int
    root: nn.Module = field(repr=False)    # the model whose forward pass starts a new count of runs
    stack: str = "encoder"                 # one of STACKS
    hidden_output: str | None = None       # the model output field with this stack's layers + 1 hidden states
    queries: str = INPUT                   # the stream its queries (and hidden states) come from
    keys: str = INPUT                      # the stream its keys come from

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

    def layers_by_attention(self) -> dict[nn.Module, list[int]]:
        """attention module -> the layer of each of its runs in one forward pass (index = run)."""
        runs: dict[nn.Module, dict[int, int]] = {}
        for layer, site in enumerate(self.layers):
            if site.attention is not None:
                runs.setdefault(site.attention, {})[site.call] = layer
        return {module: [by_call[c] for c in sorted(by_call)] for module, by_call in runs.items()}


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


def is_encoder_decoder(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


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


# dummy lengths: an encoder-decoder's source and target differ, so the weights' shapes name the stack
_SOURCE_TOKENS, _TARGET_TOKENS = 5, 3


def _dummy_inputs(model: nn.Module) -> dict:
    device = next(model.parameters()).device
    vocab = int(getattr(model.config, "vocab_size", 2) or 2)

    def ids(n: int) -> torch.Tensor:
        return torch.tensor([[min(1 + i, vocab - 1) for i in range(n)]], device=device)

    if not is_encoder_decoder(model):
        inputs = {"input_ids": ids(_TARGET_TOKENS)}
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        return inputs
    source, target = ids(_SOURCE_TOKENS), ids(_TARGET_TOKENS)
    return {"input_ids": source, "attention_mask": torch.ones_like(source), "decoder_input_ids": target}


def _outputs(output) -> tuple:
    return output if isinstance(output, tuple) else (output,)


def attention_weights_index(output) -> int | None:
    """Where among a module's outputs its (batch, heads, query, key) attention weights are, if
    anywhere: the 4-D tensor whose rows are distributions (T5 also returns a position bias of the
    same shape). A row sums to one up to the rounding of its dtype: each weight is rounded by at
    most eps/2 of itself, so (summed in float32) a row is off by at most eps/2 (bfloat16: 0.004).
    Found once, when the structure is traced: a capture reads that place (weights_at) without
    checking the values again, which would cost a pass over every map and a device sync."""
    for index, t in enumerate(_outputs(output)):
        if torch.is_tensor(t) and t.dim() == 4 and t.is_floating_point() and t.shape[-1] > 0:
            tolerance = max(1e-3, torch.finfo(t.dtype).eps)
            with torch.no_grad():
                rows = t.detach().float().sum(-1)
                if bool(((rows - 1).abs() < tolerance).all()) and bool((t >= 0).all()):
                    return index
    return None


def weights_at(output, index: int) -> torch.Tensor | None:
    """The 4-D tensor at the place the trace found a module's attention weights; None if the module
    returned none there this time (called without output_attentions)."""
    outs = _outputs(output)
    t = outs[index] if index < len(outs) else None
    return t if torch.is_tensor(t) and t.dim() == 4 else None


@dataclass
class _Trace:
    """What one forward pass ran: every module call in start order, and what the calls returned."""

    calls: list[nn.Module] = field(default_factory=list)
    weights_shape: dict[nn.Module, tuple[int, ...]] = field(default_factory=dict)  # returned attention weights
    weights_index: dict[nn.Module, int] = field(default_factory=dict)              # ... at this place of the output
    causal: dict[nn.Module, bool] = field(default_factory=dict)                    # first query sees no later key
    projections_done: list[nn.Module] = field(default_factory=list)                # in the order they finished
    hidden_outputs: dict[str, tuple[int, int]] = field(default_factory=dict)       # field -> (states, tokens)

    def count(self, module: nn.Module) -> int:
        return sum(1 for m in self.calls if m is module)

    def kind(self, module: nn.Module) -> tuple[int, int]:
        shape = self.weights_shape[module]
        return shape[-2], shape[-1]


def _trace(model: nn.Module) -> _Trace:
    inputs = _dummy_inputs(model)
    lengths = {inputs["input_ids"].shape[1], inputs.get("decoder_input_ids", inputs["input_ids"]).shape[1]}
    trace = _Trace()

    def before(module, args):
        trace.calls.append(module)

    def after(module, args, output):
        index = attention_weights_index(output)
        weights = _outputs(output)[index] if index is not None else None
        if weights is not None and index is not None and weights.shape[-1] in lengths \
                and weights.shape[-2] in lengths:
            trace.weights_shape[module] = tuple(weights.shape)
            trace.weights_index[module] = index
            trace.causal[module] = bool((weights[..., 0, 1:] == 0).all()) if weights.shape[-1] > 1 else False
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
    for name in getattr(out, "keys", lambda: [])():
        states = getattr(out, name, None)
        if isinstance(states, (tuple, list)) and states and all(torch.is_tensor(s) and s.dim() == 3 for s in states):
            trace.hidden_outputs[name] = (len(states), int(states[0].shape[1]))
    return trace


@dataclass(frozen=True)
class _Kind:
    """One stack as the trace shows it: its name, the (query, key) lengths of its weights, and
    the streams those come from."""

    name: str
    queries: int
    keys: int
    query_stream: str = INPUT
    key_stream: str = INPUT


def _kinds(model: nn.Module, trace: _Trace) -> list[_Kind]:
    if is_encoder_decoder(model):
        found = {trace.kind(m) for m in trace.weights_shape}
        wanted = [_Kind("encoder", _SOURCE_TOKENS, _SOURCE_TOKENS),
                  _Kind("decoder", _TARGET_TOKENS, _TARGET_TOKENS, DECODER_INPUT, DECODER_INPUT),
                  _Kind("cross", _TARGET_TOKENS, _SOURCE_TOKENS, DECODER_INPUT, INPUT)]
        return [k for k in wanted if (k.queries, k.keys) in found]
    modules = list(trace.weights_shape)
    if not modules:
        return []
    causal = all(trace.causal[m] for m in modules)
    return [_Kind("decoder" if causal else "encoder", _TARGET_TOKENS, _TARGET_TOKENS)]


def _of_kind(trace: _Trace, kind: _Kind) -> set[nn.Module]:
    return {m for m in trace.weights_shape if trace.kind(m) == (kind.queries, kind.keys)}


def _listed_blocks(model: nn.Module, attention: set[nn.Module], trace: _Trace,
                   num_layers: int | None) -> list[tuple[nn.Module, int]] | None:
    """A ModuleList of identical blocks, each run once and each holding attention: block l is layer l."""
    counts = Counter(id(m) for m in trace.calls)
    for m in model.modules():   # outermost first: it holds the transformer blocks (inner lists are parts)
        if (isinstance(m, nn.ModuleList) and len(m) > 0 and (num_layers is None or len(m) == num_layers)
                and len({type(c) for c in m}) == 1 and all(counts[id(c)] == 1 for c in m)
                and all(any(s is not c and s in attention for s in c.modules()) for c in m)):
            return [(block, 0) for block in m]
    return None


def _shared_blocks(model: nn.Module, attention: set[nn.Module], num_layers: int,
                   trace: _Trace) -> list[tuple[nn.Module, int]] | None:
    """The outermost module type that runs num_layers times in all and holds attention: its runs, in order."""
    depth = {m: name.count(".") for name, m in model.named_modules() if name}   # the model itself is no block
    holds_attention = {m for m in depth if any(c is not m and c in attention for c in m.modules())}
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


def _find_applications(model: nn.Module, attention: set[nn.Module], trace: _Trace,
                       single_stack: bool) -> list[tuple[nn.Module, int]]:
    if not single_stack:   # encoder-decoders list their blocks; the config's count is per stack
        found = _listed_blocks(model, attention, trace, None)
    else:
        num_layers = _num_layers(model.config)
        found = (_listed_blocks(model, attention, trace, num_layers)
                 or _shared_blocks(model, attention, num_layers, trace))
    if not found:
        raise UnsupportedModelError(
            f"{type(model).__name__}: found no list of identical blocks, nor one block run once per layer "
            "per forward pass; t3vis needs one attention block application per layer")
    return found


def _attention_name(first: nn.Module, attention: set[nn.Module]) -> str:
    names = {m: n for n, m in first.named_modules()}
    proper = [n for m, n in names.items() if n and m in attention]  # "" is the block itself
    return min(proper, key=lambda n: n.count("."))  # outermost


def _projection_name(model: nn.Module, first: nn.Module, attention_name: str, trace: _Trace) -> str:
    names = {m: n for n, m in first.named_modules()}
    inside = [names[m] for m in trace.projections_done if names.get(m, "").startswith(attention_name + ".")]
    if not inside:
        raise UnsupportedModelError(f"{type(model).__name__}: the attention module {attention_name!r} "
                                    "runs no linear projection")
    return inside[-1]


def _check_one_run_per_layer(model: nn.Module, layers: tuple[LayerSite, ...], trace: _Trace) -> None:
    """Gates find a layer by counting its projection's runs: that count must match the layers using it."""
    for proj in {site.projection for site in layers}:
        expected = sum(1 for site in layers if site.projection is proj)
        if trace.count(proj) != expected:
            raise UnsupportedModelError(
                f"{type(model).__name__}: the attention output projection {type(proj).__name__} ran "
                f"{trace.count(proj)} times in one forward pass, but {expected} layers use it; "
                "t3vis needs one attention module per layer (e.g. ALBERT with inner_group_num=1)")


def _hidden_output(model: nn.Module, kind: _Kind, num_layers: int, trace: _Trace) -> str | None:
    """The output field holding this stack's layers + 1 states; cross-attention has none of its own."""
    if kind.name == "cross":
        return None
    for name, (states, tokens) in trace.hidden_outputs.items():
        if tokens == kind.queries and states == num_layers + 1:
            return name
    lengths = sorted(states for states, tokens in trace.hidden_outputs.values() if tokens == kind.queries)
    raise UnsupportedModelError(
        f"{type(model).__name__} returned {lengths[0] if lengths else 'no'} hidden states for its {num_layers}-layer "
        f"{kind.name}; t3vis needs {num_layers + 1} (the embeddings and one per layer), and one attention module "
        "per layer (e.g. ALBERT with inner_group_num=1)")


def _hidden_size(model: nn.Module, in_features: int) -> int:
    config = model.config
    return int(getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
               or getattr(config, "d_model", None) or getattr(config, "dim", None) or in_features)


def _layout(model: nn.Module, kind: _Kind, trace: _Trace, single_stack: bool) -> AttentionLayout:
    attention = _of_kind(trace, kind)
    applications = _find_applications(model, attention, trace, single_stack)
    first = applications[0][0]
    attention_name = _attention_name(first, attention)
    num_heads = trace.weights_shape[first.get_submodule(attention_name)][1]
    projection_name = _projection_name(model, first, attention_name, trace)
    in_features = _projection_in_features(first.get_submodule(projection_name))
    if in_features % num_heads:
        raise UnsupportedModelError(f"{type(model).__name__}: projection {projection_name!r} has {in_features} "
                                    f"inputs, not a multiple of {num_heads} heads")
    index = trace.weights_index[first.get_submodule(attention_name)]
    layers = tuple(LayerSite(block, block.get_submodule(projection_name), call, block.get_submodule(attention_name),
                             index) for block, call in applications)
    _check_one_run_per_layer(model, layers, trace)
    hidden_output = _hidden_output(model, kind, len(layers), trace)
    return AttentionLayout(layers, num_heads, in_features // num_heads, _hidden_size(model, in_features), root=model,
                           stack=kind.name, hidden_output=hidden_output, queries=kind.query_stream,
                           keys=kind.key_stream)


def find_stacks(model: nn.Module) -> tuple[AttentionLayout, ...]:
    """Every attention stack of the model, in the order they run: (encoder,) or (decoder,) for a
    single-stack model; (encoder, decoder, cross) for an encoder-decoder."""
    trace = _trace(model)
    kinds = _kinds(model, trace)
    if not kinds:
        raise UnsupportedModelError(
            f"{type(model).__name__}: no module returned attention weights; load the model "
            'with attn_implementation="eager" (other kernels return none)')
    return tuple(_layout(model, kind, trace, single_stack=len(kinds) == 1) for kind in kinds)


def find_attention_layout(model: nn.Module) -> AttentionLayout:
    """The one attention stack of a single-stack model (an encoder, or a decoder-only model)."""
    stacks = find_stacks(model)
    if len(stacks) > 1:
        raise UnsupportedModelError(f"{type(model).__name__} has {len(stacks)} attention stacks "
                                    f"({', '.join(s.stack for s in stacks)}); use find_stacks()")
    return stacks[0]
