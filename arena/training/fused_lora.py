"""A plain LoRA linear layer's training forward and backward as one autograd function (CPU).

Why: peft computes `base(x) + lora_B(lora_A(dropout(x))) * scaling`. Under bf16 autocast on a
2-core CPU each adapted layer then makes about seven dense element-wise passes besides its matmuls:
the base layer's cast of x, dropout's scaled copy, the `* scaling` and the `+`, and in backward the
scaling, dropout's up-cast and scaled copy of the gradient, and the sum of the two input gradients.
With seven adapted layers per transformer block these passes cost more than the adapter's matmuls.

Here, with d = dropout(x) written once in the compute dtype (the skip sampler's masks from the same
RNG draws, `arena/training/dropout.py`), s = 1/(1 − p) and c the LoRA scaling:

    x̂ = cast(x)   (once, shared by q/k/v and by gate/up: one cast per distinct input)
    y = x̂ Wᵀ + (d Aᵀ)(c·B)ᵀ                            one addmm: no separate `* c` and `+` passes
    ∂L/∂x = g W + mask(g_a (s·A)),  g_a = g (c·B)       one addmm onto the masked adapter gradient
    ∂L/∂A = g_aᵀ d,  ∂L/∂B = c·gᵀ (d Aᵀ)

so dropout's backward (an up-cast, a scaled copy) and the sum of the two input gradients become one
index_fill and one addmm. The law is unchanged (same masks, same scaling); two bf16 roundings move
(c is folded into B, and s into A for the input gradient, before their casts rather than applied to
products), each one rounding of the same quantity, like `fused_ce`. A sparse form of dropout (a
correction of x Aᵀ over the ~p·n dropped entries) was measured first and lost: torch's CPU
index_add_ and int64 division over ~30k entries cost more than the dense passes they replace.

Installed by `train.fused_lora` (auto: CPU only) on exact `peft.tuners.lora.layer.Linear` modules
over a frozen `nn.Linear`; at call time anything else (an adapter variant such as DoRA, several
active adapters, merged or disabled adapters, `adapter_names`, a torch dropout, a LoRA bias, a
trainable base weight) runs peft's own forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from arena.training.cast_cache import compute_weight
from arena.training.dropout import MAX_SKIP_P, SkipDropout, bernoulli_drop_indices, drop_at


class _SharedCast:
    """The last input cast to the compute dtype, reused while the same tensor object, unchanged, comes back
    (q/k/v and gate/up all read one normed input). Holding the tensor keeps its storage from being reused."""

    def __init__(self):
        self.clear()

    def __call__(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if x.dtype == dtype:
            return x
        if self.x is not x or self.version != x._version or self.value.dtype != dtype:
            self.x, self.version, self.value = x, x._version, x.to(dtype)
        return self.value

    def clear(self) -> None:
        self.x, self.version, self.value = None, None, None


class _LoRALinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, xc, w, bias, a_w, b_w, scaling, idx, s):
        # x: the input (its dtype is the gradient's); xc: x in the compute dtype (shared cast); w: the
        # frozen base weight in the compute dtype; a_w [r, d_in], b_w [d_out, r]: the adapter's parameters
        dt = xc.dtype
        d_in = xc.shape[-1]
        x2 = xc.reshape(-1, d_in)
        # dropout as the skip sampler's: bf16(x·s) in one pass, the dropped entries zeroed
        xd = x2 if idx is None else drop_at(x.reshape(-1, d_in), idx, s, dt)
        a = xd @ a_w.detach().to(dt).T  # [n, r]
        bs = (b_w.detach() * scaling).to(dt)  # c·B, also the backward's
        y = torch.addmm(F.linear(x2, w, bias), a, bs.T)
        ctx.save_for_backward(xd, w, a_w, bs, a, idx if idx is not None else torch.empty(0, dtype=torch.long))
        ctx.scaling, ctx.s, ctx.has_idx, ctx.x_dtype, ctx.x_shape = scaling, s, idx is not None, x.dtype, x.shape
        ctx.b_dtype = b_w.dtype
        return y.view(*xc.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, g):
        xd, w, a_w, bs, a, idx = ctx.saved_tensors
        dt = xd.dtype
        g2 = g.reshape(-1, g.shape[-1]).to(dt)
        g_a = g2 @ bs  # [n, r]: ∂L/∂a
        grad_b = (g2.T @ a).float().mul_(ctx.scaling) if ctx.needs_input_grad[5] else None
        grad_a = (g_a.T @ xd).float() if ctx.needs_input_grad[4] else None  # xd: the dropped, scaled input
        grad_x = None
        if ctx.needs_input_grad[0]:
            gxa = g_a @ (a_w * ctx.s).to(dt)  # the adapter path's input gradient, dropout's scaling folded in
            if ctx.has_idx:
                gxa.view(-1).index_fill_(0, idx, 0.0)  # zero where dropout zeroed the input
            grad_x = torch.addmm(gxa, g2, w).view(ctx.x_shape).to(ctx.x_dtype)  # + the base path, one output
        return (grad_x, None, None, None,
                grad_a.to(a_w.dtype) if grad_a is not None else None,
                grad_b.to(ctx.b_dtype) if grad_b is not None else None, None, None, None)


def _fused_forward(module, cast: _SharedCast):
    stock = type(module).forward.__get__(module)

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        ad = module.active_adapters
        base = module.base_layer
        if (args or kwargs or module.disable_adapters or module.merged or len(ad) != 1 or ad[0] not in module.lora_A
                or ad[0] in module.lora_variant or base.weight.requires_grad or base.weight.dtype != torch.float32):
            return stock(x, *args, **kwargs)
        name = ad[0]
        lora_a, lora_b, drop = module.lora_A[name], module.lora_B[name], module.lora_dropout[name]
        if lora_a.bias is not None or lora_b.bias is not None or x.dtype != torch.float32:
            return stock(x, *args, **kwargs)
        p = drop.p if isinstance(drop, SkipDropout) else (0.0 if isinstance(drop, nn.Identity) else None)
        if p is None or p > MAX_SKIP_P:
            return stock(x, *args, **kwargs)
        dev = x.device.type
        dt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else torch.float32
        xc = cast(x, dt)
        idx = bernoulli_drop_indices(x.numel(), p, device=x.device) if module.training and drop.training and p > 0 else None
        bias = base.bias.detach().to(dt) if base.bias is not None else None
        with torch.autocast(dev, enabled=False):
            return _LoRALinear.apply(x, xc, compute_weight(base, dt), bias, lora_a.weight, lora_b.weight,
                                     module.scaling[name], idx, 1.0 / (1.0 - p) if idx is not None else 1.0)

    forward._arena_fused_lora = True
    return forward


def install_fused_lora(model: nn.Module):
    """Swap the forward of every plain peft LoRA linear layer (see the module docstring); returns a
    restore function with the number swapped as its `.count`."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:  # no peft, no LoRA layers
        LoraLinear = None
    cast = _SharedCast()
    mods = [m for m in model.modules()
            if type(m) is LoraLinear and type(m.base_layer) is nn.Linear and "forward" not in vars(m)]
    for m in mods:
        m.forward = _fused_forward(m, cast)

    def restore() -> None:
        for m in mods:
            if getattr(vars(m).get("forward"), "_arena_fused_lora", False):
                del m.forward
        mods.clear()
        cast.clear()

    restore.count = len(mods)
    return restore
