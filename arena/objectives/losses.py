"""Loss functions as pure functions of tensors (torchtune style): no models, no optimizers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def causal_lm_loss_sum(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy and the number of scored tokens.

        L = Σ_{b,t : y_{b,t+1} ≠ ignore} −log softmax(z_{b,t})[y_{b,t+1}]

    `logits` [B, T, V] are the model outputs, `labels` [B, T] the token ids with `ignore_index`
    on unscored positions; the shift by one happens here. Computed in fp32 whatever the logits'
    dtype (bf16 log-softmax over 49k classes loses ~2 digits). Returning the sum lets the caller
    normalise by the tokens of the whole optimizer step, so gradient accumulation gives the same
    gradient as one big batch.
    """
    shift_logits = logits[:, :-1, :]
    shift_labels = labels[:, 1:]
    mask = shift_labels != ignore_index
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    loss = F.cross_entropy(shift_logits[mask].float(), shift_labels[mask], reduction="sum")
    return loss, n
