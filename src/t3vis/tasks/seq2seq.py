"""seq2seq: an encoder-decoder maps a source to a target (summarisation, translation).

The target is tokenised as the model's tokenizer tokenises targets (`text_target`), and the
decoder is fed it shifted right behind the model's decoder start token, as Hugging Face's
`shift_tokens_right` does when a model is given labels. Past max_length the source and the
target each lose their end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from t3vis.errors import InvalidInputError, UnsupportedModelError
from t3vis.models.structure import DECODER_INPUT, INPUT, is_encoder_decoder
from t3vis.tasks.base import Batch, Examples, Stream, TrainingRow, check_texts
from t3vis.tasks.formats import SEQ2SEQ
from t3vis.tasks.generative import IGNORE, GenerativeTask, pad_id, right_pad, text_examples, valid_mask


class Seq2Seq(GenerativeTask):
    format = SEQ2SEQ
    shift = False

    def _check_family(self, model: nn.Module) -> None:
        if not is_encoder_decoder(model):
            raise UnsupportedModelError(f"{type(model).__name__} is not an encoder-decoder: record a decoder-only "
                                        "model with task='causal-lm' (a prompt plus a completion)")
        if decoder_start(model) is None:
            raise UnsupportedModelError(f"{type(model).__name__}'s config has no decoder_start_token_id (nor a "
                                        "bos_token_id): set model.config.decoder_start_token_id")

    def examples(self, model: nn.Module, texts: Sequence[str], targets=None, *,
                 label_names: Sequence[str] | None = None, what: str = "probe set") -> Examples:
        sources = check_texts(texts, what, "source")
        if targets is None:
            raise InvalidInputError(f"seq2seq needs a target text for every source of the {what} "
                                    "(targets=..., or --target-column)")
        return text_examples(sources, targets, what=what, text="source", target="target",
                             why="each needs at least one token")

    def _tokens(self, tokenizer, examples: Examples, rows) -> tuple[list[list[int]], list[list[int]]]:
        if examples.targets is None:
            raise InvalidInputError("seq2seq examples need targets")
        sources = tokenizer([examples.texts[i] for i in rows])["input_ids"]
        targets = tokenizer(text_target=[examples.targets[i] for i in rows])["input_ids"]
        return [list(s) for s in sources], [list(t) for t in targets]

    def token_lengths(self, tokenizer, examples: Examples) -> np.ndarray:
        sources, targets = self._tokens(tokenizer, examples, range(len(examples)))
        return np.array([max(len(s), len(t)) for s, t in zip(sources, targets)], np.int64)

    def training_row(self, tokenizer, input_ids, real, labels) -> TrainingRow:
        return TrainingRow(tokenizer.decode(input_ids[real], skip_special_tokens=True),
                           target=tokenizer.decode(labels[labels != IGNORE], skip_special_tokens=True))

    def encode(self, model, tokenizer, examples: Examples, rows: np.ndarray, *, max_length: int,
               device: torch.device) -> Batch:
        sources, targets = self._tokens(tokenizer, examples, rows)
        sources = [s[:max_length] for s in sources]
        targets = [t[:max_length] for t in targets]
        pad = pad_id(tokenizer)
        start = decoder_start(model)
        if start is None:
            raise UnsupportedModelError(f"{type(model).__name__}'s config has no decoder_start_token_id")
        source_ids, source_valid = right_pad(sources, pad, device), valid_mask(sources, device)
        labels = right_pad(targets, IGNORE, device)
        decoder_rows = [[start, *t[:-1]] for t in targets]
        decoder_ids, decoder_valid = right_pad(decoder_rows, pad, device), valid_mask(decoder_rows, device)
        inputs = {"input_ids": source_ids, "attention_mask": source_valid.long(),
                  "decoder_input_ids": decoder_ids, "decoder_attention_mask": decoder_valid.long()}
        return Batch(rows, inputs, labels, {INPUT: Stream(source_ids, source_valid, source_valid),
                                            DECODER_INPUT: Stream(decoder_ids, decoder_valid, decoder_valid)})


def decoder_start(model: nn.Module) -> int | None:
    config = model.config
    for name in ("decoder_start_token_id", "bos_token_id"):
        value = getattr(config, name, None)
        if value is None and hasattr(config, "decoder"):
            value = getattr(config.decoder, name, None)
        if value is not None:
            return int(value)
    return None
