"""One fused pass over the probe set: hidden states, outputs, head importance, attention.

For any task (t3vis.tasks) and any model's stacks (t3vis.models.structure.find_stacks): a single
teacher-forced forward with hidden states and attention weights, gates on every head of every
stack, then one `torch.autograd.grad` to the gated head outputs: the per-example gradient of the
loss with respect to each head's gate (Michel et al. 2019) without touching any parameter's
`.grad`. The task encodes the examples, scores them (a class, or every target token) and picks
the positions that are pooled into one state per layer. The model is left as it was found:
training flags restored, hooks removed. The per-example arrays (hidden states, gate gradients)
go where the caller says, a batch at a time: arrays in memory, or files (store/rows.py) so that
memory does not grow with the number of examples.

A layer is one application of a block: where one block serves every layer (ALBERT) the hidden
states, gate gradients and attention maps still come one per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from t3vis.models.attention_maps import capture_attention
from t3vis.models.batches import unwrap
from t3vis.models.head_gradients import capture_stack_contexts, stack_gate_gradients
from t3vis.models.structure import AttentionLayout, eval_mode, find_stacks
from t3vis.record.attention_stats import AttentionStats
from t3vis.store.rows import MemoryRows, RaggedRows, RowSink
from t3vis.tasks import get_task
from t3vis.tasks.base import Batch, Examples, Stream, Task, TokenOutputs


@dataclass
class StackSinks:
    """Where a probe pass puts one stack's per-example arrays (in memory, or files: store/rows.py)."""

    hidden: RowSink | None      # (L+1, n, d) float16, rows along axis 1; None for cross-attention
    gate_grads: RowSink         # (n, L, H) float32


@dataclass
class StackRecord:
    """What one probe pass measures in one attention stack."""

    hidden: RowSink | None      # (L+1, n, d) float16; None for cross-attention (its states are the decoder's)
    gate_grads: RowSink         # (n, L, H) float32, signed d loss / d gate; 0 for NaN examples
    attention: AttentionStats
    importance_raw: np.ndarray  # (L, H) float64: sum over the examples of |d loss / d gate|; merges by addition


@dataclass
class TokenArrays:
    """Per target token, ragged: example i's tokens are at offsets[i]:offsets[i+1]."""

    offsets: np.ndarray    # (n+1,) int64
    target: np.ndarray     # int32
    nll: np.ndarray        # float32
    prob: np.ndarray       # float32
    top1: np.ndarray       # int32

    def arrays(self) -> dict[str, np.ndarray]:
        return {"offsets": self.offsets, "target": self.target, "nll": self.nll, "prob": self.prob,
                "top1": self.top1}

    @classmethod
    def from_rows(cls, rows: TokenOutputs) -> TokenArrays:
        offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows.nll])]).astype(np.int64)

        def flat(parts: list[np.ndarray], dtype) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
        return cls(offsets, flat(rows.target, np.int32), flat(rows.nll, np.float32), flat(rows.prob, np.float32),
                   flat(rows.top1, np.int32))

    @staticmethod
    def concatenate(parts: Sequence[TokenArrays]) -> TokenArrays:
        starts = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
        offsets = np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, starts)]).astype(np.int64)
        return TokenArrays(offsets, *(np.concatenate([getattr(p, k) for p in parts])
                                      for k in ("target", "nll", "prob", "top1")))


@dataclass
class ProbeResult:
    """Everything one probe pass measures, for the examples it was given, in their order."""

    stacks: dict[str, StackRecord]          # in the order the stacks run
    outputs: dict[str, np.ndarray]          # the task's per-example outputs (its output columns but id)
    # generative tasks: per target token, in memory, or in files (store/rows.py), a shard of the examples each
    tokens: TokenArrays | list[RaggedRows] | None
    default_stack: str

    # -- the default stack, and a classifier's outputs, under their one-stack names
    @property
    def hidden(self) -> np.ndarray:
        hidden = self.stacks[self.default_stack].hidden
        assert hidden is not None
        return hidden.read()

    @property
    def gate_grads(self) -> np.ndarray:
        return self.stacks[self.default_stack].gate_grads.read()

    @property
    def attention(self) -> AttentionStats:
        return self.stacks[self.default_stack].attention

    @property
    def loss(self) -> np.ndarray:
        return self.outputs["loss"]

    @property
    def nan(self) -> np.ndarray:
        return self.outputs["nan"]

    @property
    def probs(self) -> np.ndarray:
        return self.outputs["probs"]

    @property
    def logits(self) -> np.ndarray:
        return self.outputs["logits"]


def default_stack(layouts: Sequence[AttentionLayout]) -> str:
    """The stack nearest the output that has hidden states: the decoder of an encoder-decoder."""
    return [layout.stack for layout in layouts if layout.hidden_output is not None][-1]


def pool(hidden: torch.Tensor, stream: Stream, pooling: str) -> torch.Tensor:
    """hidden (B, T, d) of one stream -> (B, d): its first token, its last real token, or the mean
    over the positions the task pools (a classifier's every token, a decoder's target tokens)."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        m = stream.pooled.to(hidden.device)[..., None].to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1)
    mask = stream.valid.to(hidden.device)
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (mask.long() * positions).argmax(1)  # last non-padding position, any padding side
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def _separator_ids(tokenizer) -> list[int]:
    ids = {getattr(tokenizer, name, None) for name in ("sep_token_id", "eos_token_id")}
    return sorted(i for i in ids if i is not None)


def probe(model: nn.Module, tokenizer, texts: Sequence[str], targets=None, *, task: str | Task | None = None,
          pooling: str = "auto", batch_size: int = 32, max_length: int = 128, thumbnail_size: int = 32,
          layout: AttentionLayout | None = None, stacks: Sequence[AttentionLayout] | None = None,
          hidden_out: np.ndarray | Mapping[str, np.ndarray] | None = None,
          progress: Callable[[int], None] | None = None) -> ProbeResult:
    """Run the fused probe pass over texts (and their labels or target texts, as the task wants).

    hidden_out, if given, is filled in place (a memory-mapped file, say): one array for the default
    stack, or {stack: array}."""
    model = unwrap(model)
    task = get_task(task)
    task.check_model(model)
    examples = task.examples(model, texts, targets)
    layouts = tuple(stacks or ((layout,) if layout is not None else find_stacks(model)))
    if hidden_out is not None and not isinstance(hidden_out, Mapping):
        hidden_out = {default_stack(layouts): hidden_out}
    sinks = {s.stack: in_memory(s, len(examples), (hidden_out or {}).get(s.stack)) for s in layouts}
    return probe_examples(model, tokenizer, examples, task, pooling=pooling, batch_size=batch_size,
                          max_length=max_length, thumbnail_size=thumbnail_size, stacks=layouts, out=sinks,
                          progress=progress)


def in_memory(layout: AttentionLayout, n: int, hidden: np.ndarray | None = None) -> StackSinks:
    """A stack's sinks in memory for n examples (hidden, if given, is the array its hidden states go into)."""
    hidden_rows = None
    if layout.hidden_output is not None:
        if hidden is None:
            hidden = np.empty((layout.num_layers + 1, n, layout.hidden_size), np.float16)
        hidden_rows = MemoryRows(hidden, axis=1)
    return StackSinks(hidden_rows, MemoryRows(np.zeros((n, layout.num_layers, layout.num_heads), np.float32)))


def probe_examples(model: nn.Module, tokenizer, examples: Examples, task: Task, *, pooling: str = "auto",
                   batch_size: int = 32, max_length: int = 128, thumbnail_size: int = 32,
                   stacks: Sequence[AttentionLayout] | None = None, out: Mapping[str, StackSinks] | None = None,
                   progress: Callable[[int], None] | None = None, lockstep: int = 0,
                   filler: Examples | None = None, tokens_out: RaggedRows | None = None) -> ProbeResult:
    """probe() for examples the task has already checked (the Recorder's).

    out: where each stack's per-example arrays go, a batch at a time (files, for a Recorder: its
    memory then does not grow with the examples); by default, arrays in memory.
    tokens_out: where a generative task's per-token values go, a batch at a time (by default, in memory).
    lockstep: run at least this many batches, repeating a batch of `filler` (results discarded)
    after the real ones. Under FSDP every forward and backward is a collective: ranks whose
    shards make fewer batches than others' would leave those waiting forever."""
    model = unwrap(model)
    layouts = tuple(stacks or find_stacks(model))
    default = default_stack(layouts)
    pooling = task.resolve_pooling(pooling, tokenizer)
    device = next(model.parameters()).device
    n = len(examples)
    records = {layout.stack: _empty_record(layout, thumbnail_size,
                                           out[layout.stack] if out is not None else in_memory(layout, n))
               for layout in layouts}
    outputs: dict[str, np.ndarray] = {}
    token_rows: list[TokenOutputs] = []
    token_order: list[np.ndarray] = []
    separators = torch.tensor(_separator_ids(tokenizer), device=device, dtype=torch.long)

    # sorted by length so each batch pads little; results are scattered back to input order
    batches = task.batches(model, tokenizer, examples, batch_size=batch_size, max_length=max_length, device=device)
    with eval_mode(model), torch.enable_grad():
        for batch in batches:
            per_example, tokens = _probe_batch(model, layouts, task, batch, pooling, records, separators)
            for name, values in per_example.items():
                if name not in outputs:
                    outputs[name] = np.empty((n, *values.shape[1:]), values.dtype)
                outputs[name][batch.rows] = values
            if tokens is not None and tokens_out is not None:
                tokens_out.put(batch.rows, {"target": tokens.target, "nll": tokens.nll, "prob": tokens.prob,
                                            "top1": tokens.top1})
            elif tokens is not None:
                token_rows.append(tokens)
                token_order.append(batch.rows)
            if progress is not None:
                progress(len(batch.rows))
        for record in records.values():
            for sink in (record.hidden, record.gate_grads):
                if sink is not None:
                    sink.finish()
        done = -(-n // batch_size)
        if lockstep > done:
            spare = filler if filler is not None else examples
            extra = task.encode(model, tokenizer, spare, np.arange(min(len(spare), batch_size)),
                                max_length=max_length, device=device)
            scratch = {layout.stack: _empty_record(layout, thumbnail_size, in_memory(layout, len(spare)))
                       for layout in layouts}
            for _ in range(lockstep - done):
                _probe_batch(model, layouts, task, extra, pooling, scratch, separators)
    token_values: TokenArrays | list[RaggedRows] | None = _in_order(token_rows, token_order, n)
    if tokens_out is not None:
        tokens_out.finish()
        token_values = [tokens_out]
    return ProbeResult(records, outputs, token_values, default)


def _empty_record(layout: AttentionLayout, thumbnail_size: int, sinks: StackSinks) -> StackRecord:
    return StackRecord(sinks.hidden, sinks.gate_grads,
                       AttentionStats(layout.num_layers, layout.num_heads, thumbnail_size,
                                      cross=layout.queries != layout.keys),
                       np.zeros((layout.num_layers, layout.num_heads)))


def _in_order(rows: list[TokenOutputs], order: list[np.ndarray], n: int) -> TokenArrays | None:
    """The batches' ragged token outputs, put back into example order."""
    if not rows:
        return None
    per_example: list[tuple] = [()] * n          # (nll, prob, top1, target) of each example
    for batch_rows, batch in zip(order, rows):
        for i, row in enumerate(batch_rows):
            per_example[int(row)] = (batch.nll[i], batch.prob[i], batch.top1[i], batch.target[i])
    nll, prob, top1, target = (list(column) for column in zip(*per_example))
    return TokenArrays.from_rows(TokenOutputs(nll, prob, top1, target))


def _probe_batch(model, layouts, task: Task, batch: Batch, pooling: str, records: dict[str, StackRecord],
                 separators: torch.Tensor) -> tuple[dict[str, np.ndarray], TokenOutputs | None]:
    device = batch.labels.device
    with capture_stack_contexts(layouts, device) as contexts, capture_attention(layouts) as maps:
        out = model(**batch.inputs, output_hidden_states=True, output_attentions=True)
    # under a device_map the logits come from the last device, the hidden states from each block's own
    losses = task.losses(out.logits, batch)
    gate_grads = stack_gate_gradients(contexts, losses)                   # per stack (B, L, H)

    with torch.no_grad():
        for layout, grads in zip(layouts, gate_grads):
            record = records[layout.stack]
            batch_grads = grads.detach().cpu().numpy()
            record.gate_grads.put(batch.rows, batch_grads)
            record.importance_raw += np.abs(batch_grads).sum(0, dtype=np.float64)
            queries, keys = batch.streams[layout.queries], batch.streams[layout.keys]
            valid = queries.valid
            separator = torch.isin(keys.ids, separators.to(keys.ids.device)) & keys.valid
            separator[:, 0] = False  # GPT-2's eos doubles as bos; the first token has its own summary
            for layer, attn in enumerate(maps.layers(layout)):
                record.attention.add_layer(layer, attn, valid, separator, keys.valid)
            if record.hidden is not None:
                states = getattr(out, str(layout.hidden_output))
                pooled = torch.stack([pool(h.detach(), queries, pooling).to(device) for h in states])   # (L+1, B, d)
                record.hidden.put(batch.rows, pooled.to(torch.float16).cpu().numpy())
        result = task.outputs(out.logits, batch, losses.detach().float().cpu().numpy())
    return result.per_example, result.tokens
