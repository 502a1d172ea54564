"""Gram distortion: relative change of the token-token cosine-similarity matrix of the module outputs.

Formula in arena/analysis/geometry.py (`gram_distortion`); imported when it runs (torch).
"""

from __future__ import annotations

from arena.analysis.metrics.registry import (
    DistributionInputs,
    ModuleMetric,
    per_distribution,
    register,
)


def _gram(x: DistributionInputs) -> dict:
    from arena.analysis.geometry import gram_distortion

    return {"gram": gram_distortion(x.base_outputs, x.tuned_outputs)}


register(ModuleMetric(
    name="gram", order=30, section="geometry", scope="distribution", compute=_gram,
    specs=per_distribution("gram_{dist}", ("geometry", "{dist}", "gram"), "Gram {D}",
                           "‖Z1 Z1ᵀ − Z0 Z0ᵀ‖_F / ‖Z0 Z0ᵀ‖_F of row-normalised outputs, {dist} prompts", False,
                           table=("general",), table_rank=6),
))
