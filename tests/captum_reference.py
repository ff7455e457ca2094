"""Captum's LayerIntegratedGradients on the word embeddings, set up as t3vis.explain sets up its own.

Test-only: t3vis never imports captum. Same baseline (pad ids, special tokens kept), same
Gauss-Legendre rule, same target logit; one text per call, unpadded.
"""

from __future__ import annotations

import numpy as np
import torch


def captum_integrated_gradients(model, tokenizer, text: str, target: int, n_steps: int = 50,
                                internal_batch_size: int | None = None, max_length: int = 128) -> np.ndarray:
    """(T,) per-token attribution: Captum's (1, T, E) summed over the embedding dimension."""
    from captum.attr import LayerIntegratedGradients

    enc = tokenizer([text], return_tensors="pt", truncation=True, max_length=max_length,
                    return_special_tokens_mask=True)
    device = next(model.parameters()).device
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)          # (1, T)
    base = torch.where(enc["special_tokens_mask"].bool().to(device), ids, tokenizer.pad_token_id)  # (1, T)

    def forward(input_ids, attention_mask):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
    attr = lig.attribute(ids, baselines=base, target=int(target), additional_forward_args=(mask,),
                         n_steps=n_steps, method="gausslegendre", internal_batch_size=internal_batch_size)
    return attr.sum(-1)[0].detach().float().cpu().numpy()
