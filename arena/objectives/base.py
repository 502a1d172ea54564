"""What an objective is: where a step's batches come from, and the loss on one micro-batch.

The training loop never knows which paradigm it runs. SFT reads packed rows; rollout objectives
(RLVR, on-policy distillation) build their micro-batches by sampling from the current policy in
`batches()`; either way the loop calls `loss()` per micro-batch, backpropagates, and steps.
Objectives never step the optimizer and never load models themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch


@dataclass
class TrainContext:
    """What an objective may use: everything is prepared by the experiment, not by the objective."""

    model: torch.nn.Module
    tokenizer: Any
    target: Any
    train: Any  # TrainConfig
    device: torch.device
    precision: str
    seed: int
    extras: dict = field(default_factory=dict)  # e.g. a teacher model for distillation
    # sharded training (arena/training/distributed.py): this process's rank among `world`
    rank: int = 0
    world: int = 1

    def micro_range(self) -> range:
        """The micro-batches of each step this rank computes: a contiguous slice of the step's
        `grad_accum`, so N ranks together see exactly one process's batch in its order."""
        k = self.train.grad_accum // self.world
        return range(self.rank * k, (self.rank + 1) * k)

    def sum_over_ranks(self, values: list[float]) -> list[float]:
        """Element-wise sums over every rank's values (the values themselves in one process): what an
        objective needs to normalise by a whole-step count when each rank sees part of the step."""
        from arena.training.distributed import Dist, all_sum

        return all_sum(Dist(self.rank, self.world), values) if self.world > 1 else values


@dataclass
class LossOutput:
    loss_sum: torch.Tensor  # summed over the micro-batch's loss tokens
    n_tokens: int  # loss tokens in this micro-batch
    metrics: dict = field(default_factory=dict)


class Objective:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    needs_rollouts: ClassVar[bool] = False

    @dataclass
    class Options:
        pass

    def __init__(self, options: Any):
        self.options = options

    def prepare(self, ctx: TrainContext) -> dict:
        """Build data for training; returns stats for the run record (examples, rows, ...)."""
        return {}

    def batches(self, ctx: TrainContext, step: int) -> list[dict]:
        """The micro-batches `ctx.micro_range()` of optimizer step `step` (all `grad_accum` of them in
        one process), deterministic in step, micro-batch index and seed."""
        raise NotImplementedError

    def loss(self, ctx: TrainContext, batch: dict) -> LossOutput:
        raise NotImplementedError

    def after_step(self, ctx: TrainContext, step: int) -> dict:
        """Called after optimizer step `step` (0-based); the keys returned are logged for the step,
        and `"stop": True` ends training there (the weights at that step are the final ones)."""
        return {}

    def state_dict(self) -> dict:
        """JSON-serialisable state the objective's decisions depend on, saved in every checkpoint."""
        return {}

    def load_state_dict(self, d: dict) -> None:
        """Restore `state_dict()` on resume (called after prepare())."""

    def tensor_state(self) -> dict:
        """Tensors the objective's future depends on (e.g. a self-teacher's EMA weights), saved in
        every checkpoint as objective.safetensors; {} for none."""
        return {}

    def load_tensor_state(self, state: dict) -> None:
        """Restore `tensor_state()` on resume (called after prepare() and the trainable weights)."""

    @classmethod
    def describe(cls) -> dict:
        import dataclasses

        def default(f):
            if f.default is not dataclasses.MISSING:
                return f.default
            return f.default_factory() if f.default_factory is not dataclasses.MISSING else None

        return {"name": cls.name, "description": cls.description,
                "options": {f.name: default(f) for f in dataclasses.fields(cls.Options)}}
