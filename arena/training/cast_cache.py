"""Cast each frozen linear weight to the autocast dtype once per run instead of once per forward.

Why: under bf16 autocast every `F.linear` casts its fp32 weight to bf16 on every call. Torch's
autocast cache only keeps casts of weights that require grad, and only until the autocast block
exits (one micro-batch), so a LoRA run re-casts all ~134M frozen weights of SmolLM2-135M on every
forward: ~0.09 s per micro-batch on the 2-core CPU, ~5% of a step. A frozen weight's bf16 copy is
the same every step, so it is made once and reused.

Bit-identical by construction: the cached tensor is `weight.to(autocast dtype)`, exactly what
autocast would pass to the matmul. Only the module's own forward uses it, and only inside autocast;
code that reads `.weight` directly (DoRA's norm, BOFT's rotation, merging, saving) still sees the
fp32 parameter. A weight changed in place (its version counter moves) or re-assigned is re-cast.
Memory: +2 bytes per frozen linear parameter while installed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _cached_forward(module: nn.Linear):
    cache: dict = {}

    def cast(dtype: torch.dtype) -> torch.Tensor:
        w = module.weight
        key = (w.data_ptr(), w._version, dtype, w.device)
        if cache.get("key") != key:
            cache["key"], cache["w"] = key, w.detach().to(dtype)
        return cache["w"]

    def forward(x: torch.Tensor) -> torch.Tensor:
        w = module.weight
        dev = x.device.type
        if w.requires_grad or w.dtype != torch.float32 or not torch.is_autocast_enabled(dev):
            return F.linear(x, w, module.bias)
        return F.linear(x, cast(torch.get_autocast_dtype(dev)), module.bias)

    forward._arena_cast_cache = True
    forward._arena_cast = cast
    return forward


def compute_weight(module: nn.Linear, dtype: torch.dtype) -> torch.Tensor:
    """`module.weight` in `dtype`, detached: the cached copy where this module's cache is installed
    and the weight is frozen fp32 (what its forward would use), else a fresh cast (or the weight
    itself when it already has that dtype). For code that runs the module's matmul itself (the fused
    head + cross-entropy, arena/objectives/linear_ce.py; the fused LoRA layer, arena/training/fused_lora.py)."""
    w = module.weight
    fwd = vars(module).get("forward")
    if getattr(fwd, "_arena_cast_cache", False) and not w.requires_grad and w.dtype == torch.float32:
        return fwd._arena_cast(dtype)
    return w.detach().to(dtype)


class FrozenCastCache:
    """Install on every plain, frozen `nn.Linear` of a model; `remove()` restores the stock forward.

    (A weight unfrozen after install falls through to the stock path at call time.)"""

    def __init__(self, model: nn.Module):
        self.modules = [m for m in model.modules()
                        if type(m) is nn.Linear and not m.weight.requires_grad and "forward" not in vars(m)]
        for m in self.modules:
            m.forward = _cached_forward(m)

    def __len__(self) -> int:
        return len(self.modules)

    def remove(self) -> None:
        for m in self.modules:
            if getattr(vars(m).get("forward"), "_arena_cast_cache", False):
                del m.forward
        self.modules = []
