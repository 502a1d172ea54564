"""Loss functions as pure functions of tensors (torchtune style): no models, no optimizers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from arena.models.loader import unwrap_peft
from arena.objectives.linear_ce import linear_cross_entropy_sum
from arena.training.cast_cache import compute_weight

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


def label_logits(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE,
                 **forward_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits only at the positions that predict a label, and those labels: ([n, V], [n]).

    Projecting every position onto a 49k vocabulary costs ~20% of a 135M model's FLOPs and the
    [B, T, V] logits dominate activation memory; only label positions are needed (about 20% of
    tokens on arith, 60% on GSM8K). Falls back to the full forward for models that post-process
    logits (soft-capping) or whose decoder/head cannot be reached.
    """
    shift_labels = labels[:, 1:]
    mask = shift_labels != ignore_index
    if getattr(model, "_arena_sharded", False):
        # FSDP2 gathers the root's weights (embeddings, head) only in the model's own forward:
        # keep the logits of every position that predicts a label in some row (one row when
        # padding-free), then select per row
        keep = mask.any(0).nonzero()[:, 0]
        logits = model(input_ids=input_ids, use_cache=False, logits_to_keep=keep, **forward_kwargs).logits
        return logits[mask[:, keep]], shift_labels[mask]
    head = _separable_head(model)
    if head is None:
        logits = model(input_ids=input_ids, use_cache=False, **forward_kwargs).logits
        return logits[:, :-1][mask], shift_labels[mask]
    hidden, targets = label_hidden(model, input_ids, labels, ignore_index, **forward_kwargs)
    return head(hidden), targets


def _separable_head(model: torch.nn.Module) -> torch.nn.Module | None:
    """The output head, where logits are head(decoder(x)) and both can be called apart (an unsharded
    model with a reachable decoder and head and no logit post-processing such as soft-capping); else None."""
    if getattr(model, "_arena_sharded", False):
        return None
    base = unwrap_peft(model)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if decoder is None or head is None or getattr(getattr(base, "config", None), "final_logit_softcapping", None):
        return None
    return head


def label_ce_sum(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE,
                 **forward_kwargs) -> tuple[torch.Tensor, int] | None:
    """`token_ce_sum(*label_logits(...))` and the number of scored tokens, with the head's projection
    and the cross-entropy fused in row chunks (arena/objectives/linear_ce.py: no [n, V] logits).
    None where the fused form does not apply (a sharded model, a head that is not a plain bias-free
    linear layer, soft-capped logits): the caller then takes the stock path."""
    head = _separable_head(model)
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return None
    hidden, targets = label_hidden(model, input_ids, labels, ignore_index, **forward_kwargs)
    w = head.weight
    dev = hidden.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) and w.dtype == torch.float32 else w.dtype
    return linear_cross_entropy_sum(hidden, w, targets, compute_weight(head, dtype)), int(targets.numel())


def label_hidden(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE,
                 **forward_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """The last hidden states (after the final norm) at the positions that predict a label, and
    those labels: ([n, d], [n]) — what `label_logits` projects with the output head (a teacher
    service ships these instead of logits: d floats a token instead of V)."""
    base = unwrap_peft(model)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    if decoder is None:
        raise ValueError(f"{type(base).__name__} exposes no decoder (get_decoder): its hidden states cannot be shipped")
    shift_labels = labels[:, 1:]
    mask = shift_labels != ignore_index
    hidden = decoder(input_ids=input_ids, use_cache=False, **forward_kwargs).last_hidden_state
    return hidden[:, :-1][mask], shift_labels[mask]


def token_ce_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Σ_i −log softmax(z_i)[y_i] over selected positions, computed in fp32."""
    return F.cross_entropy(logits.float(), targets, reduction="sum")
