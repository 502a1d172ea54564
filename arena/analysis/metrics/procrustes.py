"""Orthogonal-Procrustes residuals (aligned and raw) of the tuned vs base module outputs.

Formula in arena/analysis/geometry.py (`procrustes`); imported when it runs (torch).
"""

from __future__ import annotations

from arena.analysis.metrics.registry import (
    DistributionInputs,
    ModuleMetric,
    per_distribution,
    register,
)


def _procrustes(x: DistributionInputs) -> dict:
    from arena.analysis.geometry import procrustes

    pr = procrustes(x.base_outputs, x.tuned_outputs)
    return {"procrustes": pr.aligned, "procrustes_raw": pr.raw}


register(ModuleMetric(
    name="procrustes", order=20, section="geometry", scope="distribution", compute=_procrustes,
    specs=(*per_distribution("procrustes_{dist}", ("geometry", "{dist}", "procrustes"), "Proc {D}",
                             "‖X1 R − X0‖_F / ‖X0‖_F after centring and the best rotation R, {dist} prompts",
                             False, table=("general", "target"), table_rank=4),
           *per_distribution("procrustes_raw_{dist}", ("geometry", "{dist}", "procrustes_raw"), "raw {D}",
                             "‖X̄1 − X̄0‖_F / ‖X̄0‖_F after centring, without the rotation, {dist} prompts", False,
                             table=("general",), table_rank=5)),
))
