"""AdaLoRA (Zhang et al. 2023): SVD-shaped LoRA whose rank budget is pruned during training.

The update is P·Λ·Q with the singular-value-like Λ pruned by importance. The paper (eq. 4) and
peft's `AdaLoraModel.forward` add an orthogonality penalty on P and Q to the loss; the arena's
losses run on the logits, not through that forward, so the method returns the penalty from
`regularizer` and the training loop adds it once per step (as peft's Trainer path does with
gradient accumulation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
        orth_reg_weight: float = 0.5  # γ of the orthogonality penalty (peft's and the paper's default)

        def __post_init__(self):
            if self.orth_reg_weight < 0:
                raise ConfigError("orth_reg_weight", self.orth_reg_weight, "must be >= 0 (0: no penalty)")
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
            tinit=tinit, tfinal=tfinal, deltaT=1, orth_reg_weight=o.orth_reg_weight, task_type="CAUSAL_LM",
        )

    def on_step(self, model, step: int) -> None:
        # Must run after optimizer.step() and before zero_grad(): it reads the gradients.
        model.base_model.update_and_allocate(step)

    def regularizer(self, model) -> torch.Tensor | None:
        if self.options.orth_reg_weight == 0:
            return None
        factors = [(p, "lora_A" in n) for n, p in model.named_parameters()
                   if p.requires_grad and ("lora_A" in n or "lora_B" in n)]
        return self.options.orth_reg_weight * orthogonality_penalty(factors)


def orthogonality_penalty(factors: list[tuple[torch.Tensor, bool]]) -> torch.Tensor:
    """AdaLoRA's R(P, Q) averaged over the factors (peft's form of the paper's eq. 4):

        R = (1/|F|) · ( Σ_{A = P_k} ‖A·Aᵀ − I‖_F + Σ_{B = Q_k} ‖Bᵀ·B − I‖_F )

    `factors` holds (tensor, is_A) pairs: lora_A [r, d_in] (rows orthonormal), lora_B [d_out, r]
    (columns orthonormal). Zero iff every factor is orthonormal.
    """
    total = None
    for p, is_a in factors:
        p = p.float()
        cov = p @ p.T if is_a else p.T @ p
        term = torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype))
        total = term if total is None else total + term
    if total is None:
        raise ValueError("AdaLoRA's orthogonality penalty found no trainable lora_A/lora_B factors")
    return total / len(factors)
