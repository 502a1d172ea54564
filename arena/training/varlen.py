"""Padding-free packed attention: documents laid end to end in one row, attention per document.

Why: packing whole documents into fixed rows leaves the tail of each row empty (GSM8K in 256-token
rows: 81% fill), and every linear layer still computes those empty slots. Laying the micro-batch's
documents end to end in one [1, n_real] row computes only real tokens. Attention must then stay
within each document: a block-diagonal [n, n] mask would make SDPA compute (and mask) every
cross-document score, so instead this attention function runs SDPA once per document with the
causal flag, from the `cu_seq_lens_q` boundaries (the flash-attention varlen convention that
transformers already threads through every decoder layer as a forward kwarg).

The function is registered with transformers' AttentionInterface and switched on only for the
duration of a packed training forward (`packed_attention(model)`); no mask function is registered
under its name, so transformers builds no mask at all for that forward. Everything else (evaluation,
generation, capture) keeps the model's own attention implementation.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from arena.models.loader import unwrap_peft

NAME = "arena_varlen_sdpa"


def varlen_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                        cu_seq_lens_q: torch.Tensor | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """Causal SDPA within each document of a packed row.

    query [1, H, L, D], key/value [1, H_kv, L, D]; cu_seq_lens_q [k + 1] holds document boundaries
    (0, l_1, l_1 + l_2, …, L). Returns ([1, L, H, D], None) like transformers' sdpa function.
    """
    if cu_seq_lens_q is None or query.shape[0] != 1:
        raise ValueError(f"{NAME} needs one packed row and cu_seq_lens_q (got batch {query.shape[0]}, "
                         f"cu_seq_lens_q={'set' if cu_seq_lens_q is not None else 'None'})")
    bounds = cu_seq_lens_q.tolist()
    lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    if bounds[0] != 0 or bounds[-1] != query.shape[2] or min(lengths) <= 0:
        raise ValueError(f"cu_seq_lens_q {bounds[:4]}… does not partition a row of {query.shape[2]} tokens")
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # one repeat for the row beats SDPA's GQA path per document on CPU
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    p = dropout if module.training else 0.0
    # fp32 inside autocast: torch's CPU flash kernel is ~1.7x faster per document in fp32 than in
    # bf16 (backward), and attention scores lose nothing to rounding.
    # Elsewhere the ambient autocast stays on: it brings q/k (fp32 after RoPE) and v (bf16) to one dtype.
    dtype = query.dtype
    on_cpu = query.device.type == "cpu"
    with torch.autocast("cpu", enabled=False) if on_cpu else contextlib.nullcontext():
        q_, k_, v_ = (t.float() for t in (query, key, value)) if on_cpu else (query, key, value)
        # split (not slicing) so the backward concatenates the per-document gradients once
        # instead of scattering each into a zero tensor of the whole row
        outs = [
            F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, scale=scaling)
            for q, k, v in zip(q_.split(lengths, 2), k_.split(lengths, 2), v_.split(lengths, 2))
        ]
    out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
    out = out.to(dtype)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_sdpa_forward)


def supports_packed_attention(model: torch.nn.Module) -> bool:
    """True when the model dispatches attention through transformers' AttentionInterface."""
    base = unwrap_peft(model)
    cfg = getattr(base, "config", None)
    return bool(getattr(base, "_supports_attention_backend", False)) and cfg is not None \
        and getattr(cfg, "_attn_implementation", None) in ("sdpa", "eager")


@contextlib.contextmanager
def packed_attention(model: torch.nn.Module):
    """Within the block, the model's attention runs per document (see module docstring)."""
    register()
    base = unwrap_peft(model)
    cfg = base.config
    old = cfg._attn_implementation
    cfg._attn_implementation = NAME
    try:
        yield
    finally:
        cfg._attn_implementation = old


def recompute_context_fn(model: torch.nn.Module):
    """`context_fn` for torch's non-reentrant checkpoint: the recomputation in backward runs with the
    attention implementation the forward ran with.

    Why: `packed_attention` switches the implementation only around the forward; backward (and so
    the recomputation of a checkpointed layer) runs after the block has restored it, and would
    recompute a packed row with plain causal SDPA over every document at once: other values, and
    torch's check that the recomputation saved the same tensors fails. The implementation is read
    when the checkpointed layer runs forward and set again around its recomputation.
    """
    cfg = unwrap_peft(model).config

    @contextlib.contextmanager
    def with_impl(impl: str):
        old = cfg._attn_implementation
        cfg._attn_implementation = impl
        try:
            yield
        finally:
            cfg._attn_implementation = old

    def context_fn():
        return contextlib.nullcontext(), with_impl(cfg._attn_implementation)

    return context_fn


def cu_seq_lens(position_ids: torch.Tensor) -> torch.Tensor:
    """Document boundaries of a packed row from its position ids (a document starts where they are 0).

        cu = [t : position_ids[t] = 0] ++ [L]      (int32, as flash-attention's varlen API)
    """
    pos = position_ids.reshape(-1)
    starts = torch.nonzero(pos == 0).flatten()
    if starts.numel() == 0 or int(starts[0]) != 0:
        raise ValueError("a packed row must start a document at position 0")
    return torch.cat([starts, torch.tensor([pos.numel()], device=pos.device)]).to(torch.int32)
