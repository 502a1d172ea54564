"""LoKr (Yeh et al. 2023): Kronecker-product update, low-rank in one factor."""

from __future__ import annotations

from arena.components import METHODS
from arena.methods.base import PeftMethod, parse_target_modules
from arena.methods.lora import LowRankOptions


@METHODS.register("lokr")
class LoKr(PeftMethod):
    name = "lokr"
    description = "LoKr: Kronecker product update C ⊗ (B·A)"
    default_lr = 2e-4
    Options = LowRankOptions

    def peft_config(self, model, total_steps):
        from peft import LoKrConfig

        o = self.options
        return LoKrConfig(r=o.rank, alpha=o.alpha, module_dropout=o.dropout,
                          target_modules=parse_target_modules(o.target_modules), task_type="CAUSAL_LM")
