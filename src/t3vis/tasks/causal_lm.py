"""causal-lm: a decoder-only model trained on whole texts, or on a prompt plus a completion
with the loss on the completion only (supervised fine-tuning).

Encoding, as TRL's SFTTrainer does: the prompt with the tokenizer's special tokens, then the
completion without them, then the end-of-sequence token. A whole text is tokenised as is and
every token after the first carries the loss. Past max_length a whole text loses its end; a
prompt loses its beginning first (the words nearest the completion stay), then the completion
its end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from t3vis.errors import InvalidInputError, UnsupportedModelError
from t3vis.models.structure import INPUT, is_encoder_decoder
from t3vis.tasks.base import Batch, Examples, Stream, TrainingRow, check_texts
from t3vis.tasks.formats import CAUSAL_LM
from t3vis.tasks.generative import IGNORE, GenerativeTask, pad_id, right_pad, text_examples, valid_mask


class CausalLM(GenerativeTask):
    format = CAUSAL_LM
    shift = True

    def _check_family(self, model: nn.Module) -> None:
        if is_encoder_decoder(model):
            raise UnsupportedModelError(f"{type(model).__name__} is an encoder-decoder: record it with task='seq2seq'")

    def examples(self, model: nn.Module, texts: Sequence[str], targets=None, *,
                 label_names: Sequence[str] | None = None, what: str = "probe set") -> Examples:
        texts = check_texts(texts, what)
        if targets is None:
            empty = [i for i, t in enumerate(texts) if not t.strip()]
            if empty:
                raise InvalidInputError(f"text {empty[0]} of the {what} is empty: it has no tokens to score")
        return text_examples(texts, targets, what=what, text="prompt", target="completion",
                             why="the loss is on the completion, so each needs at least one token")

    def _sequences(self, tokenizer, examples: Examples, rows) -> list[tuple[list[int], int]]:
        """(token ids, where the loss starts) per example, before truncation."""
        if examples.targets is None:
            encoded = tokenizer([examples.texts[i] for i in rows])["input_ids"]
            return [(list(ids), 1) for ids in encoded]
        prompts = tokenizer([examples.texts[i] for i in rows])["input_ids"]
        completions = tokenizer([examples.targets[i] for i in rows], add_special_tokens=False)["input_ids"]
        eos = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
        return [(list(p) + list(c) + eos, len(p)) for p, c in zip(prompts, completions)]

    def token_lengths(self, tokenizer, examples: Examples) -> np.ndarray:
        return np.array([len(ids) for ids, _ in self._sequences(tokenizer, examples, range(len(examples)))], np.int64)

    def training_row(self, tokenizer, input_ids, real, labels) -> TrainingRow:
        """The tokens without loss are the prompt, those with it the completion; a row whose every
        token (but the first, never predicted) carries the loss is a whole text."""
        scored = (labels != IGNORE) & real if labels.shape == input_ids.shape else real
        if bool(scored[1:].all()):
            return TrainingRow(tokenizer.decode(input_ids[real], skip_special_tokens=True), target="")
        prompt, completion = input_ids[real & ~scored], input_ids[scored]
        return TrainingRow(tokenizer.decode(prompt, skip_special_tokens=True),
                           target=tokenizer.decode(completion, skip_special_tokens=True))

    def encode(self, model, tokenizer, examples: Examples, rows: np.ndarray, *, max_length: int,
               device: torch.device) -> Batch:
        ids_rows, label_rows = [], []
        for ids, start in self._sequences(tokenizer, examples, rows):
            ids, start = _truncate(ids, start, max_length)
            ids_rows.append(ids)
            label_rows.append([IGNORE] * start + ids[start:])
        input_ids = right_pad(ids_rows, pad_id(tokenizer), device)
        valid = valid_mask(ids_rows, device)
        labels = right_pad(label_rows, IGNORE, device)
        if not bool((labels[:, 1:] != IGNORE).any(1).all()):
            raise InvalidInputError(f"an example has no target token left within max_length={max_length}; "
                                    "raise max_length or shorten its prompt")
        pooled = labels != IGNORE
        pooled[:, 0] = False   # the first token is never predicted
        return Batch(rows, {"input_ids": input_ids, "attention_mask": valid.long()}, labels,
                     {INPUT: Stream(input_ids, valid, pooled)})


def _truncate(ids: list[int], start: int, max_length: int) -> tuple[list[int], int]:
    if len(ids) <= max_length:
        return ids, start
    completion = len(ids) - start
    if start == 1 or completion >= max_length:          # a whole text, or a completion alone too long
        keep_prompt = min(start, 1 if start == 1 else max(1, max_length // 4))
    else:
        keep_prompt = max_length - completion
    prompt = ids[:start][-keep_prompt:] if start > 1 else ids[:start]
    return (prompt + ids[start:])[:max_length], len(prompt)
