"""What a per-module diagnostic metric is: its scalars (`MetricSpec`) and how it is computed (`ModuleMetric`).

This module and the metric modules beside it import without torch, so the results library and
the dashboard can read the metadata (labels, directions, summary rules, where each value lives
in a record) without paying for torch; the computations import it when they run.

A module's diagnostics dict is {"shape": [out, in], <section>: ...}: a "distribution" metric
writes into section[<distribution>] once per prompt distribution, a "module" metric writes
section[slot] (or the whole section when slot is None) once per module. The summary of a run is one
aggregate per `MetricSpec` with a `summary` rule, over its modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

DISTS = ("general", "target")  # the prompt distributions of the diagnostics
DIST_LETTER = {"general": "G", "target": "T"}


def _mean(values: Sequence[float]) -> float | None:
    """Mean over modules with NaN skipped; None when no module has a value."""
    vals = [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


AGGREGATIONS: dict[str, Callable[[Sequence[Any]], float | None]] = {"mean": _mean}


@dataclass(frozen=True)
class MetricSpec:
    """One scalar of a module's diagnostics, as the record, the tables and the dashboard see it."""

    key: str  # summary key and column name, e.g. "csd_rel_general"
    path: tuple[str, ...]  # where it lives in one module's dict, e.g. ("csd", "general", "rel")
    label: str  # short column label, e.g. "CSDrel G"
    description: str  # what it measures, one line
    # Which way is closer to the base model: True (higher), False (lower); None for a descriptive
    # quantity with no better direction (how an update is shaped rather than how far it moved).
    higher_is_better: bool | None
    unit: str = ""  # "" for ratios, fractions and similarities
    summary: str | None = "mean"  # aggregation over modules (AGGREGATIONS); None: not in the summary
    distribution: str | None = None  # the prompt distribution it is measured on, if any
    table_rank: float | None = None  # column position in `arena analyze`'s module table; None: not shown
    table_width: int = 8

    def value(self, module: dict) -> Any:
        """This scalar in one module's dict (None when absent)."""
        v: Any = module
        for p in self.path:
            v = v.get(p) if isinstance(v, dict) else None
        return v


def per_distribution(key: str, path: tuple[str, ...], label: str, description: str, higher_is_better: bool | None,
                     *, table: Sequence[str] = (), table_rank: float | None = None, **kw) -> tuple[MetricSpec, ...]:
    """One `MetricSpec` per distribution: "{dist}" in key/path/description and "{D}" (G, T) in label
    are filled in; `table` lists the distributions that get a column in the module table."""
    return tuple(
        MetricSpec(key=key.format(dist=d), path=tuple(p.format(dist=d) for p in path),
                   label=label.format(D=DIST_LETTER[d]), description=description.format(dist=d),
                   higher_is_better=higher_is_better, distribution=d,
                   table_rank=table_rank if d in table else None, **kw)
        for d in DISTS)


@dataclass(frozen=True)
class DistributionInputs:
    """What a "distribution" metric sees for one module and one prompt distribution (torch tensors)."""

    module: str
    distribution: str
    delta_w: Any  # ΔW = W1 − W0 (out × in), fp32
    w0: Any  # the base weight W0
    inputs: Any  # the base model's inputs h to the module (tokens × in)
    base_outputs: Any  # the base module's outputs X0 (tokens × out)
    tuned_outputs: Any  # the tuned module's outputs X1 on the same tokens


@dataclass(frozen=True)
class ModuleInputs:
    """What a "module" metric sees: the weights, and the module's dict computed so far."""

    module: str
    delta_w: Any
    w0: Any
    partial: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModuleMetric:
    """A computation that fills some of a module's diagnostics, with the scalars it produces.

    compute: DistributionInputs -> dict merged into section[distribution] ("distribution" scope), or
    ModuleInputs -> dict stored at section[slot] / the whole section, or None to store nothing
    ("module" scope). Module metrics run after every distribution metric, in registration order.
    """

    name: str
    section: str
    scope: Literal["distribution", "module"]
    compute: Callable[[Any], dict | None]
    specs: tuple[MetricSpec, ...]
    slot: str | None = None
    timer: str | None = None  # its bucket in the record's timings ("<timer>_s"; None: the metric's name)
    # Its place among the registered metrics (built-ins 10..50, in steps of 10): the order of a module's
    # dict, of the summary and of the table. Ties keep registration order; a new metric goes last.
    order: int = 1000

    @property
    def timer_name(self) -> str:
        return self.timer or self.name


# Kept sorted by ModuleMetric.order (stable): the order of a module's dict and of the summary.
METRICS: dict[str, ModuleMetric] = {}


def register(metric: ModuleMetric) -> ModuleMetric:
    """Add a metric; its name and every scalar key must be new."""
    if metric.name in METRICS:
        raise ValueError(f"diagnostic metric {metric.name!r} registered twice")
    if metric.scope not in ("distribution", "module"):
        raise ValueError(f"diagnostic metric {metric.name!r}: scope must be 'distribution' or 'module'")
    known = {s.key for m in METRICS.values() for s in m.specs}
    for s in metric.specs:
        if s.key in known:
            raise ValueError(f"diagnostic metric {metric.name!r}: scalar {s.key!r} is already registered")
        if s.summary is not None and s.summary not in AGGREGATIONS:
            raise ValueError(f"diagnostic metric {metric.name!r}: {s.key} has unknown summary {s.summary!r}; "
                             f"known: {', '.join(AGGREGATIONS)}")
        known.add(s.key)
    METRICS[metric.name] = metric
    ordered = sorted(METRICS.values(), key=lambda m: m.order)  # stable: ties keep registration order
    METRICS.clear()
    METRICS.update((m.name, m) for m in ordered)
    return metric
