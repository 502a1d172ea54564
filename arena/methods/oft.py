"""OFT (Qiu et al. 2023): multiply W0 by a block-diagonal orthogonal matrix R = Cayley(S).

Orthogonal updates preserve the angles between W0's neurons (hyperspherical energy), which is
PEFT-Arena's explanation for OFT's low forgetting. The block size must divide the input width
of every adapted layer.

Interpolation ("generator" path): the skew-symmetric generator Q (OFT's trainable parameters) is
scaled by α before the Cayley transform, W(α) = W0 · R(αQ)ᵀ (PEFT-Arena reports this path keeps
more general ability at the same target level). R(αQ) is orthogonal only as far as the Cayley
transform is computed exactly: peft's default (`cayley_neumann: true`) replaces (I − Q)⁻¹ by a
truncated Neumann series I + Q + Q² + …, so R deviates from orthogonality by O(‖αQ‖ᵏ) (small for
the small generators training produces, not zero); `cayley_neumann: false` uses the exact inverse,
and then every intermediate weight is a rotation of W0 to round-off.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from arena.components import METHODS
from arena.errors import ConfigError
from arena.methods.base import (
    PeftMethod,
    WeightAt,
    adapter_layers,
    parse_target_modules,
    targeted_linears,
)


def oft_weight_at(layer, adapter: str, w0: torch.Tensor) -> WeightAt:
    """α -> W0 · R(αQ)ᵀ for one OFT Linear layer (Q cloned now, so later merges do not matter)."""
    rot = layer.oft_R[adapter]
    q = rot.weight.detach().float().clone()
    eye = torch.eye(w0.shape[1], dtype=torch.float32)

    @torch.no_grad()
    def weight_at(alpha: float) -> torch.Tensor:
        saved = rot.weight.data
        rot.weight.data = q * alpha  # peft's own Cayley (Neumann or exact, COFT projection) on αQ
        try:
            # = layer.get_delta_weight(adapter) for fp32 weights; calling the rotation module itself
            # keeps the (merged, now unused) base layer out of this closure and so frees it
            r = rot.get_weight().detach().float()
        finally:
            rot.weight.data = saved
        # merge writes W0 Rᵀ; written as W0 + W0 (R − I)ᵀ so that α = 0 (R = I) is exactly W0
        return w0 + w0 @ (r - eye).T

    return weight_at


@METHODS.register("oft")
class OFT(PeftMethod):
    name = "oft"
    interpolation_path = "generator"  # R(α) = Cayley(α·Q): orthogonal for every α (exactly with cayley_neumann: false)
    description = "OFT: block-diagonal orthogonal rotation of each adapted weight (Cayley parameterised)"
    default_lr = 2e-4
    additive = False

    @dataclass
    class Options:
        block_size: int = 32
        target_modules: str = "all-linear"
        module_dropout: float = 0.0
        coft: bool = False  # constrained OFT: keep R within eps of I
        eps: float = 6e-5
        cayley_neumann: bool = True  # Neumann-series Cayley (peft default, faster); False = exact inverse

        def __post_init__(self):
            if self.block_size <= 0:
                raise ConfigError("block_size", self.block_size, "must be a positive integer")
            if not 0 <= self.module_dropout < 1:
                raise ConfigError("module_dropout", self.module_dropout, "must be in [0, 1)")
            parse_target_modules(self.target_modules)

    def check_model(self, model) -> None:
        super().check_model(model)
        b = self.options.block_size
        layers = targeted_linears(model, parse_target_modules(self.options.target_modules))
        bad = {n: m.in_features for n, m in layers.items() if m.in_features % b}
        if bad:
            widths = sorted({m.in_features for m in layers.values()})
            example = next(iter(bad))
            divisors = sorted({d for d in range(2, 257) if all(w % d == 0 for w in widths)})
            raise ConfigError(
                "method.block_size",
                b,
                f"must divide the input width of every adapted layer; {len(bad)} layer(s) do not "
                f"(e.g. {example}: {bad[example]}). Widths here: {widths}; block sizes that fit: {divisors[-8:]}",
            )

    def generators(self, model) -> dict[str, Callable[[torch.Tensor], WeightAt]]:
        from peft.tuners.oft.layer import OFTLayer

        return {f"{name}.weight": functools.partial(oft_weight_at, layer, adapter)
                for name, layer, adapter in adapter_layers(model, OFTLayer)}

    def peft_config(self, model, total_steps):
        from peft import OFTConfig

        o = self.options
        return OFTConfig(
            r=0,
            oft_block_size=o.block_size,
            target_modules=parse_target_modules(o.target_modules),
            module_dropout=o.module_dropout,
            coft=o.coft,
            eps=o.eps,
            use_cayley_neumann=o.cayley_neumann,
            task_type="CAUSAL_LM",
        )
