"""BOFT (Liu et al. 2024): OFT with butterfly-factorised orthogonal matrices (denser rotations, fewer params)."""

from __future__ import annotations

from dataclasses import dataclass

from arena.components import METHODS
from arena.errors import ConfigError
from arena.methods.base import PeftMethod, parse_target_modules


def _fbd_available() -> bool:
    import torch

    return torch.cuda.is_available()


@METHODS.register("boft")
class BOFT(PeftMethod):
    name = "boft"
    interpolation_path = "generator"  # R(α) = Cayley(α·Q): stays orthogonal for every α
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
