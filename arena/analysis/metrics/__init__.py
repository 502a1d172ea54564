"""Diagnostic metrics, registered once each with their summary rule and display metadata.

Torch-free: import this (not arena.analysis.diagnostics) for column lists, labels and directions.

    from arena.analysis.metrics import metric_specs, summary_specs, table_specs, get_spec

A new metric is one module in this package that calls `register(ModuleMetric(...))` (see
metrics/cka.py): every module here is imported below, and `ModuleMetric.order` places its values in
a module's dict and in the summary. `arena.analysis.module_metrics` computes and summarises
whatever is registered.
"""

from __future__ import annotations

from arena.analysis.metrics import registry
from arena.analysis.metrics.registry import (
    AGGREGATIONS,
    DISTS,
    METRICS,
    DistributionInputs,
    MetricSpec,
    ModuleInputs,
    ModuleMetric,
    per_distribution,
    register,
)
from arena.registry import import_modules

# Every module of this package registers its metrics when imported: importing them all here is what
# makes a new metric one file. Their place in the record comes from ModuleMetric.order, not from
# the import order, so discovery order does not matter.
import_modules(__name__, skip=("registry",))

__all__ = ["AGGREGATIONS", "DISTS", "METRICS", "DistributionInputs", "MetricSpec", "ModuleInputs", "ModuleMetric",
           "get_spec", "metric_specs", "metric_units", "per_distribution", "register", "sections", "summary_specs",
           "table_specs"]


def metric_units() -> list[ModuleMetric]:
    """The registered metrics in their `order` (ties: registration order); the order they run in."""
    return list(registry.METRICS.values())


def sections() -> list[str]:
    """Top-level keys of a module's diagnostics dict after "shape", in order of first registration."""
    return list(dict.fromkeys(m.section for m in registry.METRICS.values()))


def metric_specs() -> list[MetricSpec]:
    """Every registered scalar: per section, the per-distribution ones distribution by distribution,
    then the section's others (the order of today's record summary)."""
    out: list[MetricSpec] = []
    for sec in sections():
        specs = [s for m in registry.METRICS.values() if m.section == sec for s in m.specs]
        for d in DISTS:
            out += [s for s in specs if s.distribution == d]
        out += [s for s in specs if s.distribution is None]
    return out


def summary_specs() -> list[MetricSpec]:
    """The scalars in a run's diagnostics summary, in its order."""
    return [s for s in metric_specs() if s.summary is not None]


def table_specs() -> list[MetricSpec]:
    """The columns of `arena analyze`'s per-module table, left to right."""
    shown = [s for s in metric_specs() if s.table_rank is not None]
    return sorted(shown, key=lambda s: (s.table_rank, DISTS.index(s.distribution) if s.distribution else -1))


def get_spec(key: str) -> MetricSpec:
    """The scalar registered under `key` (e.g. "cka_general"); KeyError naming the known keys otherwise."""
    for s in metric_specs():
        if s.key == key:
            return s
    raise KeyError(f"no diagnostic metric {key!r}; known: {', '.join(s.key for s in metric_specs())}")
