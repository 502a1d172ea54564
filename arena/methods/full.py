"""Full fine-tuning: every weight is trained; the reference point for forgetting."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from arena.components import METHODS
from arena.methods.base import Method


@METHODS.register("full")
class FullFineTuning(Method):
    name = "full"
    description = "full fine-tuning of every weight (fp32 master weights)"
    default_lr = 2e-5  # PEFT-Arena used 5e-5 at 7B; 2e-5 is stable for 135M on short CPU budgets

    @dataclass
    class Options:
        train_embeddings: bool = True  # False freezes the (tied) embedding matrix

    def wrap(self, model: torch.nn.Module, total_steps: int) -> torch.nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        if not self.options.train_embeddings:
            model.get_input_embeddings().weight.requires_grad_(False)
        return model

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        return model
