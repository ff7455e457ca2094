"""Sequence classification, the paper's case: a text and a class; one loss per example."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from t3vis.errors import InvalidInputError, UnsupportedModelError
from t3vis.models.batches import num_labels, validate_examples
from t3vis.models.structure import INPUT
from t3vis.tasks.arguments import as_integer_vector, as_logits, check_classes, checkable_now
from t3vis.tasks.base import Batch, BatchOutputs, Examples, Stream, Task, TrainingRow
from t3vis.tasks.formats import CLASSIFICATION
from t3vis.tasks.generative import at_least_float32
from t3vis.tasks.labels import resolve_labels


class Classification(Task):
    format = CLASSIFICATION
    default_saliency_target = "the predicted class"

    def check_model(self, model: nn.Module) -> None:
        num_labels(model)
        if _has_language_model_head(model):
            raise UnsupportedModelError(
                f"{type(model).__name__} is a language model (it predicts tokens, not classes): record it with "
                "task='causal-lm' (or 'seq2seq'), or load a classifier (AutoModelForSequenceClassification)")

    def examples(self, model: nn.Module, texts: Sequence[str], targets=None, *,
                 label_names: Sequence[str] | None = None, what: str = "probe set") -> Examples:
        if targets is None:
            raise InvalidInputError(f"classification needs a label per text of the {what}")
        classes = num_labels(model)
        resolved = resolve_labels(targets, getattr(model.config, "id2label", None), classes, label_names=label_names)
        ids = validate_examples(texts, resolved.ids, classes, what=what)
        return Examples(list(texts), ids, None, resolved.names)

    def resolve_pooling(self, pooling: str, tokenizer) -> str:
        if pooling == "auto":
            # encoders summarise into a leading [CLS]/<s>; decoders into the last token
            return "cls" if getattr(tokenizer, "cls_token", None) is not None else "last"
        if pooling not in ("cls", "mean", "last"):
            raise InvalidInputError(f"unknown pooling {pooling!r}; choose cls, mean, last or auto")
        return pooling

    def encode(self, model, tokenizer, examples: Examples, rows: np.ndarray, *, max_length: int,
               device: torch.device) -> Batch:
        enc = tokenizer([examples.texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt", padding_side="right")
        inputs = {k: v.to(device) for k, v in enc.items()}
        valid = inputs["attention_mask"].bool()
        return Batch(rows, inputs, torch.as_tensor(examples.labels[rows], device=device),
                     {INPUT: Stream(inputs["input_ids"], valid, valid)})

    def losses(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        # under a device_map the logits come from the last device
        return nn.functional.cross_entropy(at_least_float32(logits), batch.labels.to(logits.device), reduction="none")

    def outputs(self, logits: torch.Tensor, batch: Batch, losses: np.ndarray) -> BatchOutputs:
        logits_np = logits.detach().float().cpu().numpy()
        labels = batch.labels.cpu().numpy()
        nan = ~np.isfinite(logits_np).all(axis=1) | ~np.isfinite(losses)
        z = logits_np - np.nanmax(logits_np, axis=1, keepdims=True)
        e = np.exp(z)
        probs = e / e.sum(axis=1, keepdims=True)
        preds = np.where(nan, -1, np.nan_to_num(logits_np, nan=-np.inf).argmax(1))
        return BatchOutputs({"pred": preds, "loss": losses, "gold_prob": probs[np.arange(len(labels)), labels],
                             "correct": preds == labels, "nan": nan, "probs": probs, "logits": logits_np})

    def observed(self, model, logits, labels):
        classes = num_labels(model)
        logits_t = as_logits(logits, classes)
        labels_t = as_integer_vector(labels, "labels", logits_t.shape[0], "one class index per batch row")
        if checkable_now(labels_t):
            check_classes(labels_t, classes)
        labels_t = labels_t.to(logits_t.device)
        out_of_range = ((labels_t < 0) | (labels_t >= classes)).any()
        safe = labels_t.clamp(0, classes - 1)   # an out-of-range gather would abort a CUDA context
        probs = logits_t.detach().float().softmax(-1)
        gold = probs.gather(1, safe.view(-1, 1)).squeeze(1)
        return gold, (probs.argmax(-1) == safe), out_of_range

    def training_row(self, tokenizer, input_ids, real, labels) -> TrainingRow:
        return TrainingRow(tokenizer.decode(input_ids[real], skip_special_tokens=True), label=int(labels))

    def label_range(self, model: nn.Module) -> str:
        return f"the model's classes 0..{num_labels(model) - 1}"

    def token_lengths(self, tokenizer, examples: Examples) -> np.ndarray:
        return np.array([len(ids) for ids in tokenizer(examples.texts)["input_ids"]], np.int64)

    def metrics(self, outputs: dict[str, np.ndarray], splits: np.ndarray) -> dict:
        ok = ~outputs["nan"]
        correct = outputs["correct"] & ok
        loss = outputs["loss"]
        metrics = {"probe_accuracy": float(correct.mean()),
                   "probe_loss": float(np.nanmean(loss)) if ok.any() else None,
                   "nan_examples": int((~ok).sum())}
        for split in sorted(set(splits.tolist())):
            where = splits == split
            metrics[f"{split}_accuracy"] = float(correct[where].mean())
            if ok[where].any():
                metrics[f"{split}_loss"] = float(np.nanmean(loss[where]))
        return metrics


def _has_language_model_head(model: nn.Module) -> bool:
    get = getattr(model, "get_output_embeddings", None)
    return callable(get) and get() is not None
