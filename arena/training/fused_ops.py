"""Fused forms of the Llama code's element-wise regions: rotary embedding and RMSNorm.

Why: with the matmuls in bf16 on AMX/AVX-512 cores, a LoRA step of SmolLM2-135M spends most of its
time in small element-wise passes, and on a 2-core CPU every torch op also pays a fixed dispatch and
thread-sync cost. Transformers' stock forms are written for readability:

- `apply_rotary_pos_emb` builds `rotate_half(x) = cat(-x2, x1)` (a negation and a concatenation per
  call); its backward scatters each half's gradient into a zero tensor of the whole head (two
  fills, two copies, two full adds).
- `LlamaRMSNorm` is five autograd nodes (pow, mean, rsqrt, mul, mul) whose backward takes about
  seven passes over the hidden states.

`fused_rope` writes both halves of the rotation straight into the output and computes the backward
half by half. It is bit-identical to the stock function, forward and backward (same fp32 products,
the same bf16 roundings of the two gradient contributions, one bf16 addition): the tests compare
with `torch.equal`.

`fused_rmsnorm` keeps the stock forward ops (the output is bit-identical) and replaces the backward
by its closed form,

    x̂ = x·r,  r = (mean(x²) + ε)^(-1/2),  g' = g·w
    ∂L/∂x = r·(g' − x̂·mean(g'·x̂)),   ∂L/∂w = Σ_tokens g·x̂,

four passes instead of about seven. It rounds differently from autograd's chain (fp32, relative
1e-6 on the gradient), so it is an option (`train.fused_rmsnorm`); the tests bound its gradient
against the stock one and the loss trajectory of a bf16 run against the stock path.

Both are installed only for the duration of training (`install_fused_ops`) and only on modules whose
code is transformers' Llama code (checked by bytecode), so a model with its own variant (Gemma's
1 + w norm, partial rotary) keeps it.
"""

from __future__ import annotations

import sys

import torch
from torch import nn


class _RoPE(torch.autograd.Function):
    """y = x·cos + rotate_half(x)·sin, rotate_half(x) = cat(−x₂, x₁), without building rotate_half."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = x.shape[-1] // 2
        x1, x2 = x[..., :h], x[..., h:]
        out = torch.empty(x.shape, dtype=torch.result_type(x, cos), device=x.device)
        o1, o2 = out[..., :h], out[..., h:]
        # first half: x₁·c₁ + (−x₂)·s₁ = x₁·c₁ − x₂·s₁ exactly (negation is exact in IEEE)
        torch.mul(x1, cos[..., :h], out=o1)
        o1.sub_(x2 * sin[..., :h])
        torch.mul(x2, cos[..., h:], out=o2)
        o2.add_(x1 * sin[..., h:])
        ctx.save_for_backward(cos, sin)
        ctx.x_dtype = x.dtype
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        cos, sin = ctx.saved_tensors
        h = g.shape[-1] // 2
        dt = ctx.x_dtype
        # Autograd's stock backward: the x·cos branch gives dt(g·cos); the rotate_half branch gives
        # dt(g·sin), whose halves land swapped (and negated for x₂); the two are summed in dt.
        # The same roundings in the same order, so the result is bit-identical.
        gx = (g * cos).to(dt)
        gx[..., :h] += (g[..., h:] * sin[..., h:]).to(dt)
        gx[..., h:] -= (g[..., :h] * sin[..., :h]).to(dt)
        return gx, None, None


def fused_apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    """Drop-in for transformers' Llama `apply_rotary_pos_emb` (same signature, same results)."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    if cos.requires_grad or sin.requires_grad or q.shape[-1] % 2:  # never on the stock rotary module
        from transformers.models.llama.modeling_llama import rotate_half

        return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)
    return _RoPE.apply(q, cos, sin), _RoPE.apply(k, cos, sin)


class _RMSNorm(torch.autograd.Function):
    """y = w · dtype(x·r) with the stock forward ops; backward in closed form (module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        input_dtype = x.dtype
        xf = x.to(torch.float32)
        r = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        xhat = xf * r
        ctx.save_for_backward(xhat, r, weight)
        ctx.input_dtype = input_dtype
        return weight * xhat.to(input_dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        xhat, r, weight = ctx.saved_tensors
        gw = None
        if ctx.needs_input_grad[1]:
            gw = (g * xhat.to(ctx.input_dtype)).reshape(-1, g.shape[-1]).sum(0).to(weight.dtype)
        gx = None
        if ctx.needs_input_grad[0]:
            gp = (g * weight).float()
            m = torch.linalg.vecdot(gp, xhat).unsqueeze(-1) / xhat.shape[-1]  # mean(g'·x̂)
            gx = gp.mul_(r).addcmul_(xhat, r * m, value=-1.0).to(ctx.input_dtype)
        return gx, gw, None


def _fused_rmsnorm_forward(module: nn.Module):
    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        return _RMSNorm.apply(hidden_states, module.weight, module.variance_epsilon)

    forward._arena_fused = True
    return forward


def _plain_function(fn):
    """`fn`, or the function a hub-kernel wrapper dispatches to by default: with the `kernels`
    package installed, transformers (>= 5.2x) replaces module functions such as
    apply_rotary_pos_emb by an nn.Module whose forward calls the original from its closure (the
    closure's only plain function; None when there is not exactly one)."""
    if fn is None or hasattr(fn, "__code__"):
        return fn
    cells = getattr(getattr(type(fn), "forward", None), "__closure__", None) or ()
    funcs = [c.cell_contents for c in cells if hasattr(c.cell_contents, "__code__")]
    return funcs[0] if len(funcs) == 1 else None


def _same_code(fn, ref) -> bool:
    fn, ref = _plain_function(fn), _plain_function(ref)
    code, ref_code = getattr(fn, "__code__", None), getattr(ref, "__code__", None)
    return code is not None and ref_code is not None and code.co_code == ref_code.co_code


def install_fused_ops(model: nn.Module, rope: bool, rmsnorm: bool):
    """Swap in the fused forms; returns an undo function with `.counts` (what was swapped)."""
    from transformers.models.llama import modeling_llama as llama

    undo, counts = [], {}
    if rmsnorm:
        norms = [m for m in model.modules() if "forward" not in vars(m) and hasattr(m, "variance_epsilon")
                 and isinstance(getattr(m, "weight", None), torch.Tensor)
                 and _same_code(type(m).forward, llama.LlamaRMSNorm.forward)]
        for m in norms:
            m.forward = _fused_rmsnorm_forward(m)
        undo.append(lambda: [vars(m).pop("forward", None) for m in norms])
        counts["fused_rmsnorm_modules"] = len(norms)
    if rope:
        # apply_rotary_pos_emb is a module global that the attention forward looks up per call
        mods = {sys.modules[type(m).__module__] for m in model.modules() if type(m).__name__.endswith("Attention")}
        patched = [mod for mod in mods if _same_code(getattr(mod, "apply_rotary_pos_emb", None), llama.apply_rotary_pos_emb)
                   and _same_code(getattr(mod, "rotate_half", None), llama.rotate_half)]
        for mod in patched:
            mod._arena_stock_rope = mod.apply_rotary_pos_emb
            mod.apply_rotary_pos_emb = fused_apply_rotary_pos_emb

        def restore_rope():
            for mod in patched:
                mod.apply_rotary_pos_emb = mod.__dict__.pop("_arena_stock_rope")

        undo.append(restore_rope)
        counts["fused_rope_modules"] = len(patched)

    def restore() -> None:
        for fn in reversed(undo):
            fn()

    restore.counts = counts
    return restore
