"""AdaLoRA (Zhang et al. 2023): SVD-shaped LoRA whose rank budget is pruned during training."""

from __future__ import annotations

from dataclasses import dataclass

from arena.components import METHODS
from arena.errors import ConfigError
from arena.methods.base import PeftMethod, parse_target_modules


@METHODS.register("adalora")
class AdaLoRA(PeftMethod):
    name = "adalora"
    description = "AdaLoRA: adaptive rank allocation (starts at init_rank, prunes to rank)"
    default_lr = 2e-4

    @dataclass
    class Options:
        rank: int = 8  # target average rank after pruning
        init_rank: int = 12
        alpha: float = 16.0
        dropout: float = 0.05
        target_modules: str = "all-linear"

        def __post_init__(self):
            if self.rank <= 0:
                raise ConfigError("rank", self.rank, "must be a positive integer")
            if self.init_rank < self.rank:
                raise ConfigError("init_rank", self.init_rank, f"must be >= rank ({self.rank})")
            parse_target_modules(self.target_modules)

    def peft_config(self, model, total_steps):
        from peft import AdaLoraConfig

        o = self.options
        # The rank schedule needs the step count: warm-up 10%, final 20% at the target rank.
        tinit = max(0, int(0.1 * total_steps))
        tfinal = max(0, int(0.2 * total_steps))
        if tinit + tfinal >= total_steps:
            tinit, tfinal = 0, 0
        return AdaLoraConfig(
            r=o.rank, init_r=o.init_rank, target_r=o.rank, lora_alpha=o.alpha, lora_dropout=o.dropout,
            target_modules=parse_target_modules(o.target_modules), total_step=max(total_steps, 1),
            tinit=tinit, tfinal=tfinal, deltaT=1, task_type="CAUSAL_LM",
        )

    def on_step(self, model, step: int) -> None:
        # Must run after optimizer.step() and before zero_grad(): it reads the gradients.
        model.base_model.update_and_allocate(step)
