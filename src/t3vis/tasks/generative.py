"""What the two generative tasks share: a loss over target tokens, per-token outputs, dynamics.

Targets are token ids with -100 where there is no loss. A decoder-only model's logits at
position t predict the token at t + 1, so its logits and labels are shifted against each other
(`shift`); an encoder-decoder's decoder is fed the target shifted right, so its logits at t
predict label t. Both use the model's own convention, so an example's loss equals the model's
`outputs.loss` for that example alone: the mean negative log-likelihood of its target tokens.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch
from torch import nn

from t3vis.errors import InvalidInputError, UnsupportedModelError
from t3vis.tasks.arguments import as_integer_vector, checkable_now
from t3vis.tasks.base import Batch, BatchOutputs, Examples, Task, TokenOutputs, check_texts

IGNORE = -100     # the label of a position without loss, as in Hugging Face's losses


class GenerativeTask(Task):
    shift: bool     # logits at t predict label t + 1 (decoder-only) rather than label t
    default_saliency_target = "every target token"

    def resolve_pooling(self, pooling: str, tokenizer) -> str:
        if pooling == "auto":
            return "mean"   # over the target tokens for a decoder, the source tokens for an encoder
        if pooling not in ("mean", "last"):
            raise InvalidInputError(f"unknown pooling {pooling!r} for {self.name}; choose mean, last or auto")
        return pooling

    def check_model(self, model: nn.Module) -> None:
        get = getattr(model, "get_output_embeddings", None)
        if not callable(get) or get() is None:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no language-modelling head, so it cannot do {self.name}: load it "
                "with AutoModelForCausalLM or AutoModelForSeq2SeqLM, or record a classifier with "
                "task='classification'")
        self._check_family(model)

    @abstractmethod
    def _check_family(self, model: nn.Module) -> None: ...

    def aligned(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, T', V), labels (B, T')): the logits that predict each label."""
        if self.shift:
            return logits[:, :-1], labels[:, 1:]
        return logits, labels

    def predicted(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, T) the label each position's logits predict (-100: none), so that the logits are used
        whole: slicing them for the shift would copy (B, T, V), and again in the backward pass."""
        if self.shift:
            return nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE)
        return labels

    def token_nll(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(B, T) negative log-likelihood of the label each position predicts; 0 where there is none."""
        predicted = self.predicted(batch.labels.to(logits.device))
        B, T, V = logits.shape
        nll = nn.functional.cross_entropy(at_least_float32(logits).reshape(B * T, V), predicted.reshape(B * T),
                                          ignore_index=IGNORE, reduction="none")
        return nll.view(B, T)

    def losses(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        nll = self.token_nll(logits, batch)
        batch.cache["token_nll"] = (logits, nll.detach())   # outputs() of these logits reuses it
        counts = (self.predicted(batch.labels.to(logits.device)) != IGNORE).sum(1)
        return nll.sum(1) / counts.to(nll.dtype)       # NaN for an example without target tokens (never encoded)

    @torch.no_grad()
    def outputs(self, logits: torch.Tensor, batch: Batch, losses: np.ndarray) -> BatchOutputs:
        cached_logits, nll_all = batch.cache.get("token_nll", (None, None))
        if cached_logits is not logits or nll_all is None:
            nll_all = self.token_nll(logits.detach(), batch)
        predicted = self.predicted(batch.labels.to(logits.device))
        mask = predicted != IGNORE
        counts = mask.sum(1)
        nll, top1, labels = nll_all[mask], logits.detach().argmax(-1)[mask], predicted[mask]     # row-major
        split = counts.cpu().tolist()
        nll_rows = [a.numpy() for a in nll.cpu().split(split)]
        prob_rows = [np.exp(-a) for a in nll_rows]
        top1_rows = [a.numpy() for a in top1.cpu().split(split)]
        target_rows = [a.numpy() for a in labels.cpu().split(split)]
        n_tokens = np.asarray(split, np.int64)
        mean_prob = np.array([p.mean() if len(p) else np.nan for p in prob_rows], np.float32)
        accuracy = np.array([(t == g).mean() if len(t) else np.nan for t, g in zip(top1_rows, target_rows)],
                            np.float32)
        losses = np.asarray(losses, np.float32)
        with np.errstate(over="ignore"):
            perplexity = np.exp(losses.astype(np.float64)).astype(np.float32)
        nan = ~np.isfinite(losses) | np.array([not np.isfinite(a).all() for a in nll_rows])
        return BatchOutputs({"loss": losses, "perplexity": perplexity, "mean_prob": mean_prob,
                             "token_accuracy": accuracy, "n_tokens": n_tokens, "nan": nan},
                            TokenOutputs(nll_rows, prob_rows, top1_rows, target_rows))

    def observed(self, model: nn.Module, logits, labels):
        if not torch.is_tensor(logits) or logits.dim() != 3:
            shape = tuple(logits.shape) if hasattr(logits, "shape") else type(logits).__name__
            raise InvalidInputError(f"logits have shape {shape}; {self.name} expects (batch, tokens, vocabulary): "
                                    "the model's output logits")
        if not torch.is_tensor(labels) or labels.shape != logits.shape[:2]:
            shape = tuple(labels.shape) if hasattr(labels, "shape") else type(labels).__name__
            raise InvalidInputError(f"labels have shape {shape} but logits {tuple(logits.shape)}: pass the batch's "
                                    f"token labels, (batch, tokens), with {IGNORE} where there is no loss")
        as_integer_vector(labels.reshape(-1), "labels", labels.numel(), "token ids")
        if checkable_now(labels) and bool((labels == IGNORE).all()):
            raise InvalidInputError(f"every label of this batch is {IGNORE}: no token carries a loss, so there is "
                                    "nothing to observe; check how the batch's labels are masked")
        with torch.no_grad():
            logits, labels = self.aligned(logits.detach(), labels.to(logits.device))
            mask = labels != IGNORE
            vocab = logits.shape[-1]
            out_of_range = ((labels >= vocab) | ((labels < 0) & mask)).any()
            safe = torch.where(mask, labels, 0).clamp(0, vocab - 1)
            logits = at_least_float32(logits)
            log_prob = logits.gather(-1, safe[..., None]).squeeze(-1) - logits.logsumexp(-1)
            right = (logits.argmax(-1) == safe) & mask
            counts = mask.sum(1)
            confidence = (log_prob.exp() * mask).sum(1) / counts      # NaN for a row without targets
            accuracy = right.sum(1) / counts
        return confidence, accuracy, out_of_range

    def label_range(self, model: nn.Module) -> str:
        vocab = int(getattr(model.config, "vocab_size", 0) or 0)
        return f"the vocabulary 0..{vocab - 1} (or {IGNORE} where there is no loss)"

    def metrics(self, outputs: dict[str, np.ndarray], splits: np.ndarray) -> dict:
        ok = ~outputs["nan"]
        metrics = {**_summary("probe", outputs, ok), "nan_examples": int((~ok).sum())}
        for split in sorted(set(splits.tolist())):
            metrics.update(_summary(split, outputs, ok & (splits == split)))
        return metrics


def _summary(prefix: str, outputs: dict[str, np.ndarray], rows: np.ndarray) -> dict:
    """Token-weighted: the loss of all target tokens together, as a training loop reports it."""
    if not rows.any():
        return {}
    tokens = outputs["n_tokens"][rows].astype(np.float64)
    loss = float((outputs["loss"][rows] * tokens).sum() / tokens.sum())
    accuracy = float((outputs["token_accuracy"][rows] * tokens).sum() / tokens.sum())
    return {f"{prefix}_loss": loss, f"{prefix}_perplexity": float(np.exp(min(loss, 700.0))),
            f"{prefix}_token_accuracy": accuracy}


def text_examples(texts: list[str], targets, *, what: str, text: str, target: str, why: str) -> Examples:
    """Examples of texts paired with target texts, one non-blank target per text; targets None: texts alone."""
    if targets is None:
        return Examples(texts, np.full(len(texts), -1, np.int64), None)
    targets = check_texts(targets, what, target)
    if len(targets) != len(texts):
        raise InvalidInputError(f"{len(texts)} {text}s but {len(targets)} {target}s: give one {target} per {text}")
    empty = [i for i, t in enumerate(targets) if not t.strip()]
    if empty:
        raise InvalidInputError(f"the {target} of example {empty[0]} of the {what} is empty: {why}")
    return Examples(texts, np.full(len(texts), -1, np.int64), targets)


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """float16 and bfloat16 logits are scored in float32; float64 ones (tests) stay float64."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def pad_id(tokenizer) -> int:
    """The tokenizer's pad token, or its end-of-sequence token where it has none (GPT-2, Llama)."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise InvalidInputError("the tokenizer has neither a pad token nor an end-of-sequence token to pad with; "
                            "set tokenizer.pad_token")


def right_pad(rows: list[list[int]], value: int, device) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out.to(device)


def valid_mask(rows: list[list[int]], device) -> torch.Tensor:
    width = max(len(r) for r in rows)
    lengths = torch.as_tensor([len(r) for r in rows])
    return (torch.arange(width)[None, :] < lengths[:, None]).to(device)
