"""rsLoRA (Kalajdzievski 2023): LoRA scaled by α/√r, so higher ranks keep learning."""

from __future__ import annotations

from arena.components import METHODS
from arena.methods.lora import LoRA


@METHODS.register("rslora")
class RsLoRA(LoRA):
    name = "rslora"
    description = "rank-stabilised LoRA: scaling α/√r instead of α/r"
    lora_extra = {"use_rslora": True}
