"""DoRA (Liu et al. 2024): weight-decomposed LoRA, a trained magnitude times a LoRA-updated direction."""

from __future__ import annotations

from arena.components import METHODS
from arena.methods.lora import LoRA


@METHODS.register("dora")
class DoRA(LoRA):
    name = "dora"
    description = "DoRA: magnitude vector + LoRA on the normalised direction"
    additive = False  # the column norm rescales W0 too: ΔW only after merging
    lora_extra = {"use_dora": True}
