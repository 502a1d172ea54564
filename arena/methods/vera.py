"""VeRA (Kopiczko et al. 2024): frozen shared random projections, only scaling vectors trained."""

from __future__ import annotations

from dataclasses import dataclass

from arena.components import METHODS
from arena.errors import ConfigError
from arena.methods.base import PeftMethod, parse_target_modules


@METHODS.register("vera")
class VeRA(PeftMethod):
    name = "vera"
    description = "VeRA: shared frozen random A,B; trains per-layer scaling vectors d, b"
    default_lr = 2e-3  # VeRA trains ~100x fewer parameters and needs a ~10x higher LR than LoRA
    additive = False  # ΔW = Λb B Λd A: additive in weights, but not in its own parameters

    @dataclass
    class Options:
        rank: int = 256
        dropout: float = 0.0
        d_initial: float = 0.1
        target_modules: str = "all-linear"

        def __post_init__(self):
            if self.rank <= 0:
                raise ConfigError("rank", self.rank, "must be a positive integer")
            if not 0 <= self.dropout < 1:
                raise ConfigError("dropout", self.dropout, "must be in [0, 1)")
            parse_target_modules(self.target_modules)

    def peft_config(self, model, total_steps):
        from peft import VeraConfig

        o = self.options
        return VeraConfig(
            r=o.rank,
            vera_dropout=o.dropout,
            d_initial=o.d_initial,
            target_modules=parse_target_modules(o.target_modules),
            save_projection=True,
            task_type="CAUSAL_LM",
        )
