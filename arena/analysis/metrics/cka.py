"""Linear CKA between the base and tuned module outputs on the same tokens.

Formula in arena/analysis/geometry.py (`linear_cka`); imported when it runs (torch).
"""

from __future__ import annotations

from arena.analysis.metrics.registry import (
    DistributionInputs,
    ModuleMetric,
    per_distribution,
    register,
)


def _cka(x: DistributionInputs) -> dict:
    from arena.analysis.geometry import linear_cka

    return {"cka": linear_cka(x.base_outputs, x.tuned_outputs)}


register(ModuleMetric(
    name="cka", order=40, section="geometry", scope="distribution", compute=_cka,
    specs=per_distribution("cka_{dist}", ("geometry", "{dist}", "cka"), "CKA {D}",
                           "linear CKA of base vs tuned outputs, {dist} prompts (1 = same up to rotation and "
                           "scale)", True, table=("general", "target"), table_rank=7),
))
