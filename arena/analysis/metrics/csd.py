"""CSD (capability-conditioned drift) of ΔW on each distribution's inputs, and the G/T ratio.

Formulas in arena/analysis/drift.py; the computations import it when they run (torch).
"""

from __future__ import annotations

from arena.analysis.metrics.registry import (
    DISTS,
    DistributionInputs,
    MetricSpec,
    ModuleInputs,
    ModuleMetric,
    per_distribution,
    register,
)

_ABOUT = {
    "abs": ("E_t ‖ΔW h_t‖² on the base model's {dist} inputs", "squared activation norm"),
    "rel": ("E_t ‖ΔW h_t‖² / E_t ‖W0 h_t‖² on {dist} inputs: change relative to the signal", ""),
    "un": (("E_t ‖ΔW h_t‖² / (‖ΔW‖_F² E_t ‖h_t‖²) on {dist} inputs, in [0, 1]: how much ΔW lines up "
            "with where the inputs have energy"), ""),
}
_TABLE = {"rel": (1, ("general", "target")), "un": (2, ("general",))}


def _csd(x: DistributionInputs) -> dict:
    from arena.analysis.drift import csd

    return csd(x.delta_w, x.inputs, x.w0)


def _ratio(x: ModuleInputs) -> dict | None:
    from arena.analysis.drift import csd_ratio

    done = x.partial["csd"]
    return csd_ratio(done["general"], done["target"]) if all(d in done for d in DISTS) else None


register(ModuleMetric(
    name="csd", order=10, section="csd", scope="distribution", compute=_csd,
    specs=tuple(s for k, (about, unit) in _ABOUT.items()
                for s in per_distribution(f"csd_{k}_{{dist}}", ("csd", "{dist}", k), f"CSD{k} {{D}}", about, False,
                                          unit=unit, table=_TABLE.get(k, (None, ()))[1],
                                          table_rank=_TABLE.get(k, (None, ()))[0], table_width=9)),
))

register(ModuleMetric(
    name="csd_ratio", order=11, section="csd", scope="module", slot="ratio", compute=_ratio, timer="csd",
    specs=tuple(MetricSpec(key=f"csd_ratio_{k}", path=("csd", "ratio", k), label=f"G/T {k}",
                           description=f"CSD_{k}(general) / CSD_{k}(target): > 1 moves general-prompt "
                                       f"activations more than the target ones", higher_is_better=False,
                           table_rank=3 if k == "rel" else None)
                for k in _ABOUT),
))
