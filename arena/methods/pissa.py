"""PiSSA (Meng et al. 2024): LoRA initialised on W0's principal singular directions.

A·B starts as the top-r SVD part of W0 and the frozen weight becomes the residual, so training
moves the principal subspace directly (PEFT-Arena: the method that forgets most).
"""

from __future__ import annotations

from dataclasses import dataclass

from arena.components import METHODS
from arena.errors import ConfigError
from arena.methods.lora import LoRA, LowRankOptions


@dataclass
class PissaOptions(LowRankOptions):
    dropout: float = 0.0  # PiSSA's recommended setting
    svd: str = "exact"  # exact SVD (fp32) or 'fast' (randomised, niter=4) for big models

    def __post_init__(self):
        super().__post_init__()
        if self.svd not in ("exact", "fast"):
            raise ConfigError("svd", self.svd, "allowed: exact, fast")


@METHODS.register("pissa")
class PiSSA(LoRA):
    name = "pissa"
    description = "PiSSA: LoRA initialised from the principal singular vectors of W0"
    Options = PissaOptions
    plan_as = "lora"  # `arena plan` counts it on the meta device as LoRA (same shapes; its SVD needs weights)

    @property
    def lora_extra(self):
        return {"init_lora_weights": "pissa" if self.options.svd == "exact" else "pissa_niter_4"}
