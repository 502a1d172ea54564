"""IA³ (Liu et al. 2022): learned rescaling vectors on keys, values and the MLP input."""

from __future__ import annotations

from dataclasses import dataclass

from arena.components import METHODS
from arena.methods.base import PeftMethod, parse_target_modules


@METHODS.register("ia3")
class IA3(PeftMethod):
    name = "ia3"
    description = "IA3: elementwise rescaling of k/v projections and the MLP down projection input"
    default_lr = 3e-3
    additive = False

    @dataclass
    class Options:
        target_modules: str = "k_proj,v_proj,down_proj"
        feedforward_modules: str = "down_proj"

        def __post_init__(self):
            parse_target_modules(self.target_modules)

    def peft_config(self, model, total_steps):
        from peft import IA3Config

        o = self.options
        return IA3Config(
            target_modules=parse_target_modules(o.target_modules),
            feedforward_modules=parse_target_modules(o.feedforward_modules),
            task_type="CAUSAL_LM",
        )
