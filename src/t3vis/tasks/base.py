"""The one interface every task implements, and the batches it hands to the model passes.

A task says what an example is and what the model is asked to do with it: how an example is
encoded and which tokens carry the loss (`encode`), the loss and outputs of each example
(`losses`, `outputs`), what training dynamics it keeps (`observed`), which positions are
pooled into one state per layer (the `pooled` mask of each stream) and what an attribution
explains by default (`default_saliency_target`). Record, analysis and the server ask the task;
none of them branches on its name.

A batch carries one or two token streams (names from t3vis.models.structure): "input"
(input_ids: a classifier's text, a decoder's whole sequence, an encoder-decoder's source) and,
for encoder-decoders, "decoder_input" (the target shifted right). Each attention stack reads its
queries and keys from one of them (t3vis.models.structure.AttentionLayout.queries / .keys).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from t3vis.errors import InvalidInputError
from t3vis.tasks.formats import TaskFormat


@dataclass
class Stream:
    """One token stream of a padded batch."""

    ids: torch.Tensor        # (B, T) token ids
    valid: torch.Tensor      # (B, T) bool: real tokens, not padding
    pooled: torch.Tensor     # (B, T) bool: the positions "mean" pooling averages (the task's choice)


@dataclass
class Batch:
    rows: np.ndarray                       # the examples in this batch, as indices into the task's Examples
    inputs: dict[str, torch.Tensor]        # model(**inputs)
    labels: torch.Tensor                   # (B,) classes, or (B, T) token ids with -100 where no loss
    streams: dict[str, Stream]
    cache: dict = field(default_factory=dict)   # what the task's losses() keeps for its outputs() of the same logits


@dataclass
class TokenOutputs:
    """Per target token, one array per example of the batch (ragged)."""

    nll: list[np.ndarray]          # float32 negative log-likelihood
    prob: list[np.ndarray]         # float32 probability of the target token
    top1: list[np.ndarray]         # int64 the model's most likely token at that position
    target: list[np.ndarray]       # int64 the target token


@dataclass
class BatchOutputs:
    per_example: dict[str, np.ndarray]     # the task's output columns other than id, one value per example
    tokens: TokenOutputs | None = None


@dataclass(frozen=True)
class TrainingRow:
    """A training example as the callback reads it back from a tokenised dataset row."""

    text: str
    label: int = -1                 # its class; -1 where the task has none
    target: str | None = None       # a generative task's target or completion ("" for a whole text)


@dataclass
class Examples:
    """A validated set of examples, in the caller's order."""

    texts: list[str]                         # the text, source or prompt
    labels: np.ndarray                       # int64 class per example; -1 where the task has no classes
    targets: list[str] | None = None         # the target or completion per example (generative tasks)
    label_names: list[str] = field(default_factory=list)
    truncated: int = 0                       # examples cut at max_length when encoded

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows: Sequence[int] | np.ndarray) -> Examples:
        rows = np.asarray(rows, dtype=np.int64)
        return Examples([self.texts[i] for i in rows], self.labels[rows],
                        None if self.targets is None else [self.targets[i] for i in rows], self.label_names)


class Task(ABC):
    format: TaskFormat
    default_saliency_target: str          # what `explain` attributes when no target is given

    @property
    def name(self) -> str:
        return self.format.name

    # -- examples and model ------------------------------------------------------------

    @abstractmethod
    def check_model(self, model: nn.Module) -> None:
        """UnsupportedModelError if the model cannot do this task (a classifier given causal-lm...)."""

    @abstractmethod
    def examples(self, model: nn.Module, texts: Sequence[str], targets=None, *,
                 label_names: Sequence[str] | None = None, what: str = "probe set") -> Examples:
        """Check and normalise the examples; targets are class labels or target texts."""

    @abstractmethod
    def resolve_pooling(self, pooling: str, tokenizer) -> str:
        """"auto" to the task's default; InvalidInputError for an unknown one."""

    # -- model passes ------------------------------------------------------------------

    @abstractmethod
    def encode(self, model: nn.Module, tokenizer, examples: Examples, rows: np.ndarray, *, max_length: int,
               device: torch.device) -> Batch:
        """The examples `rows` as one right-padded batch."""

    @abstractmethod
    def losses(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(B,) differentiable loss per example (NaN where the model's output is not finite)."""

    @abstractmethod
    def outputs(self, logits: torch.Tensor, batch: Batch, losses: np.ndarray) -> BatchOutputs:
        """Everything the task records per example (and per target token) for one batch; losses
        are `losses()`'s, detached."""

    @abstractmethod
    def token_lengths(self, tokenizer, examples: Examples) -> np.ndarray:
        """Tokens per example before truncation (the longest stream), to count what max_length cuts."""

    @abstractmethod
    def observed(self, model: nn.Module, logits, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training dynamics of one training batch, without a device sync: per row
        (confidence, correct, has_target): the gold probability, or a generative example's mean
        target-token probability; whether it was right, or its token accuracy; and whether the
        row had anything to score. InvalidInputError if the shapes do not fit."""

    @abstractmethod
    def label_range(self, model: nn.Module) -> str:
        """What a label may be, for messages: "the model's classes 0..2"."""

    @abstractmethod
    def metrics(self, outputs: dict[str, np.ndarray], splits: np.ndarray) -> dict:
        """Checkpoint metrics (meta.json) from the probe set's per-example outputs."""

    @abstractmethod
    def training_row(self, tokenizer, input_ids: torch.Tensor, real: torch.Tensor, labels: torch.Tensor) -> TrainingRow:
        """One tokenised training row back as text: input_ids (T,), real (T,) bool non-padding,
        labels as the dataset holds them (a class, or (T',) token labels with -100)."""

    def lengths(self, examples: Examples) -> list[int]:
        """A cheap length per example, to sort batches by."""
        return [len(t) + len(examples.targets[i]) if examples.targets else len(t)
                for i, t in enumerate(examples.texts)]

    def batches(self, model: nn.Module, tokenizer, examples: Examples, *, batch_size: int, max_length: int,
                device: torch.device) -> Iterator[Batch]:
        """Sorted by length so each batch pads little; rows index into examples."""
        if batch_size < 1 or max_length < 1:
            raise InvalidInputError(f"batch_size ({batch_size}) and max_length ({max_length}) must be at least 1")
        order = np.argsort(self.lengths(examples), kind="stable")
        for start in range(0, len(examples), batch_size):
            yield self.encode(model, tokenizer, examples, order[start:start + batch_size], max_length=max_length,
                              device=device)


def check_texts(texts: Sequence, what: str, name: str = "text") -> list[str]:
    if len(texts) == 0:
        raise InvalidInputError(f"the {what} is empty: give at least one example")
    not_text = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if not_text:
        raise InvalidInputError(f"{name} {not_text[0]} is {type(texts[not_text[0]]).__name__}, not text")
    return list(texts)
