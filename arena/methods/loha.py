"""LoHa (Hyeon-Woo et al. 2022): Hadamard product of two low-rank updates (higher effective rank)."""

from __future__ import annotations

from arena.components import METHODS
from arena.methods.base import PeftMethod, parse_target_modules
from arena.methods.lora import LowRankOptions


@METHODS.register("loha")
class LoHa(PeftMethod):
    name = "loha"
    description = "LoHa: (B1·A1) ⊙ (B2·A2) low-rank Hadamard update"
    default_lr = 2e-4
    Options = LowRankOptions

    def peft_config(self, model, total_steps):
        from peft import LoHaConfig

        o = self.options
        return LoHaConfig(r=o.rank, alpha=o.alpha, module_dropout=o.dropout,
                          target_modules=parse_target_modules(o.target_modules), task_type="CAUSAL_LM")
