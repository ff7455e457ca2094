"""What the generative views compute with a loaded model: one example's target tokens and its attention.

An example is encoded as its task encodes it in the probe pass (`task.examples`, `task.encode`)
and scored by the task's own outputs (`task.losses`, `task.outputs`), so a probe example's
per-token probability, NLL and top-1 here are the ones `ck.token_outputs` stored, computed the
same way. Streams are listed as the saliency matrix lists them: the source (input) first, then
an encoder-decoder's decoder inputs.

Imports torch: the routes import this module lazily. The caller holds the model's lock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from t3vis.errors import InvalidInputError, NotFoundError, UnsupportedModelError
from t3vis.models.attention_maps import capture_attention
from t3vis.models.structure import DECODER_INPUT, INPUT, AttentionLayout, eval_mode, is_encoder_decoder
from t3vis.tasks.base import Batch
from t3vis.tasks.generative import IGNORE, GenerativeTask

STREAMS = (INPUT, DECODER_INPUT)      # in the order their tokens are listed


@dataclass(frozen=True)
class Encoded:
    """One example as its task encodes it."""

    batch: Batch
    streams: list[str]                 # the batch's streams, in STREAMS order
    tokens: dict[str, list[str]]       # per stream, its tokens (special tokens included)
    target_ids: np.ndarray             # (n_target,) int64, the tokens the task scores
    predicted_at: np.ndarray           # (n_target,) int64: the column of all streams' tokens that predicts each

    @property
    def input_tokens(self) -> list[str]:
        return [t for s in self.streams for t in self.tokens[s]]

    @property
    def stream_lengths(self) -> dict[str, int]:
        return {s: len(self.tokens[s]) for s in self.streams}


@dataclass(frozen=True)
class TokenScores:
    """The model's teacher-forced scores of one example's target tokens."""

    prob: np.ndarray          # (n_target,) float32
    nll: np.ndarray           # (n_target,) float32
    top1: np.ndarray          # (n_target,) int64 the most likely token at each target position
    loss: float               # mean NLL of the target tokens
    perplexity: float
    mean_prob: float
    token_accuracy: float


def encode(model, tokenizer, task: GenerativeTask, text: str, target: str | None, max_length: int) -> Encoded:
    """The example (text, and its target or completion; None: a causal-lm text scored whole) as a batch of one."""
    examples = task.examples(model, [text], None if target is None else [target], what="example")
    device = next(model.parameters()).device
    batch = task.encode(model, tokenizer, examples, np.arange(1), max_length=max_length, device=device)
    streams = [s for s in STREAMS if s in batch.streams]
    tokens = {s: tokenizer.convert_ids_to_tokens(batch.streams[s].ids[0][batch.streams[s].valid[0]].tolist())
              for s in streams}
    last = batch.streams[streams[-1]].ids
    index = torch.arange(last.shape[1], device=last.device)[None, :, None]        # the logits' positions
    where, labels = task.aligned(index, batch.labels.to(last.device))
    scored = labels[0] != IGNORE
    offset = sum(len(tokens[s]) for s in streams[:-1])
    return Encoded(batch, streams, tokens, labels[0][scored].cpu().numpy().astype(np.int64),
                   offset + where[0, :, 0][scored].cpu().numpy().astype(np.int64))


def score(model, task: GenerativeTask, encoded: Encoded) -> TokenScores:
    """One forward pass: the task's per-token and per-example outputs of the example."""
    batch = encoded.batch
    with eval_mode(model), torch.no_grad():
        logits = model(**batch.inputs).logits
        losses = task.losses(logits, batch)
        out = task.outputs(logits, batch, losses.float().cpu().numpy())
    if out.tokens is None:
        raise UnsupportedModelError(f"task {task.name} gives no per-token outputs; the generative views need them")
    per = out.per_example
    return TokenScores(np.asarray(out.tokens.prob[0], np.float32), np.asarray(out.tokens.nll[0], np.float32),
                       np.asarray(out.tokens.top1[0], np.int64), float(per["loss"][0]), float(per["perplexity"][0]),
                       float(per["mean_prob"][0]), float(per["token_accuracy"][0]))


def stack_attention(model, layouts, stack: str, encoded: Encoded) -> tuple[np.ndarray, list[str], list[str]]:
    """float32 (L, H, Tq, Tk) attention of every head of one stack, with the query and key tokens.
    Self-attention: queries and keys are one stream; cross-attention: queries are the decoder inputs
    (each predicts the target token at its position), keys the source tokens."""
    layout = _layout(layouts, stack)
    batch = encoded.batch
    with eval_mode(model), torch.no_grad(), capture_attention([layout]) as maps:
        model(**batch.inputs, output_attentions=True)
    queries, keys = batch.streams[layout.queries], batch.streams[layout.keys]
    att = torch.stack([a[0].float().cpu() for a in maps.layers(layout)])              # (L, H, Tq, Tk)
    att = att[:, :, queries.valid[0].cpu()][:, :, :, keys.valid[0].cpu()]
    return att.numpy(), encoded.tokens[layout.queries], encoded.tokens[layout.keys]


def _layout(layouts, stack: str) -> AttentionLayout:
    if len(layouts) == 1:             # a single-stack model: its one stack, whatever the run calls it
        return layouts[0]
    for layout in layouts:
        if layout.stack == stack:
            return layout
    raise NotFoundError(f"the model has no {stack!r} stack; it has {[lay.stack for lay in layouts]}")


def check_positions(model, tokenizer, texts: list[str], max_new_tokens: int, max_length: int) -> None:
    """InvalidInputError where a generation would run past the positions the model has (a learned
    position table raises deep inside the model instead): a decoder-only model reads the prompt and
    every new token, an encoder-decoder's decoder its start token and every new token."""
    config = getattr(model, "config", None)
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        return                              # relative positions (T5): no table to run past
    if is_encoder_decoder(model):
        longest, what = 1, "the decoder's start token"
    else:
        longest = max(min(len(ids), max_length) for ids in tokenizer(texts)["input_ids"])
        what = f"the longest prompt's {longest} tokens"
    if longest + max_new_tokens > limit:
        raise InvalidInputError(f"max_new_tokens={max_new_tokens} runs past the model's {limit} positions "
                                f"({what} come first): ask for at most {max(limit - longest, 0)} new tokens")
