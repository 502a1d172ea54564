"""BOFT (Liu et al. 2024): OFT with butterfly-factorised orthogonal matrices (denser rotations, fewer params).

Interpolation ("generator" path): as OFT's, the butterfly generators are scaled by α before the
Cayley transform, and the output scale s is interpolated linearly, s(α) = 1 + α(s − 1).
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
)


def _fbd_available() -> bool:
    return torch.cuda.is_available()


def boft_weight_at(layer, adapter: str, w0: torch.Tensor) -> WeightAt:
    """α -> the BOFT-merged weight with generators α·G and scale 1 + α(s − 1), for one Linear layer."""
    g = layer.boft_R[adapter]
    s = layer.boft_s[adapter]
    g0, s0 = g.detach().float().clone(), s.detach().float().clone()
    eye = torch.eye(w0.shape[1], dtype=torch.float32)

    @torch.no_grad()
    def weight_at(alpha: float) -> torch.Tensor:
        saved_g, saved_s = g.data, s.data
        g.data, s.data = g0 * alpha, 1.0 + alpha * (s0 - 1.0)
        try:
            m, scale = layer.get_delta_weight(adapter)
            # peft returns the boft_s Parameter itself: copy it before its data is restored
            m, scale = m.detach().float().clone(), scale.detach().float().clone()
        finally:
            g.data, s.data = saved_g, saved_s
        # merge writes (W0 Mᵀ) * s = W0 + W0 (M − I)ᵀ s + W0 (s − 1)
        return w0 + (w0 @ (m - eye).T) * scale + w0 * (scale - 1.0)

    return weight_at


@METHODS.register("boft")
class BOFT(PeftMethod):
    name = "boft"
    interpolation_path = "generator"  # R(α) = Cayley(α·Q): orthogonal for every α (exact inverse, not a Neumann series)
    description = "BOFT: butterfly-factorised orthogonal fine-tuning"
    default_lr = 2e-4
    additive = False

    @dataclass
    class Options:
        block_size: int = 8
        n_butterfly_factor: int = 1
        dropout: float = 0.0
        target_modules: str = "all-linear"

        def __post_init__(self):
            if self.block_size <= 0:
                raise ConfigError("block_size", self.block_size, "must be a positive integer")
            if self.n_butterfly_factor < 1:
                raise ConfigError("n_butterfly_factor", self.n_butterfly_factor, "must be >= 1")
            if self.n_butterfly_factor > 1 and not _fbd_available():
                # peft needs its compiled CUDA extension for butterfly factors > 1 and otherwise
                # silently trains with factor 1 while the config says more: refuse instead.
                raise ConfigError("n_butterfly_factor", self.n_butterfly_factor,
                                  "factors > 1 need peft's BOFT CUDA extension (a CUDA GPU with a build toolchain); use 1 here")
            parse_target_modules(self.target_modules)

    def generators(self, model) -> dict[str, Callable[[torch.Tensor], WeightAt]]:
        from peft.tuners.boft.layer import BOFTLayer

        return {f"{name}.weight": functools.partial(boft_weight_at, layer, adapter)
                for name, layer, adapter in adapter_layers(model, BOFTLayer)}

    def peft_config(self, model, total_steps):
        from peft import BOFTConfig

        o = self.options
        return BOFTConfig(
            boft_block_size=o.block_size,
            boft_n_butterfly_factor=o.n_butterfly_factor,
            boft_dropout=o.dropout,
            target_modules=parse_target_modules(o.target_modules),
            task_type="CAUSAL_LM",
        )
