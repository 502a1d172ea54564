"""Training objectives, one module each, registered by name in OBJECTIVES."""

from arena.objectives.base import OBJECTIVES, LossOutput, Objective, TrainContext  # noqa: F401
from arena.objectives import sft  # noqa: F401  (registration)
from arena.objectives import grpo  # noqa: F401  (registration)
from arena.objectives import opd  # noqa: F401  (registration)
from arena.objectives import gkd  # noqa: F401  (registration)

__all__ = ["OBJECTIVES", "Objective", "LossOutput", "TrainContext"]
