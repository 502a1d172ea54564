"""Every registered diagnostic metric (arena.analysis.metrics) of one module, and their summary over modules.

No metric is named here: adding one to the registry adds it to each module's dict, the summary and
(with a `table_rank`) the `arena analyze` table.
"""

from __future__ import annotations

import contextlib
import time

from arena.analysis.capture import Capture
from arena.analysis.metrics import (
    AGGREGATIONS,
    DistributionInputs,
    ModuleInputs,
    metric_units,
    sections,
    summary_specs,
)
from arena.errors import ArenaError


class Timer:
    """Seconds per named bucket, accumulated over `with timer(name):` blocks."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def metric_timers() -> list[str]:
    """The timing buckets of the registered metrics (what the record's "metrics_s" adds up)."""
    return list(dict.fromkeys(m.timer_name for m in metric_units()))


def module_metrics(name: str, w0, w1, base: dict[str, Capture], tuned: dict[str, Capture],
                   timer: Timer | None = None) -> dict:
    """All registered diagnostics of one module from its weights (torch tensors) and the captures
    of each distribution: {"shape": [out, in], <section>: ...}."""
    timer = timer or Timer()
    if w0.shape != w1.shape:
        raise ArenaError(f"{name}: base weight {tuple(w0.shape)} and tuned weight {tuple(w1.shape)} differ in shape")
    dw = w1 - w0  # fp32; the metric functions promote to float64
    units = metric_units()
    out: dict = {"shape": list(w0.shape), **{sec: {} for sec in sections()}}
    for d, cap0 in base.items():
        cap1 = tuned[d]
        h, x0, x1 = cap0.inputs[name], cap0.outputs[name], cap1.outputs[name]
        if x0.shape[0] != x1.shape[0] or h.shape[0] != x0.shape[0]:
            raise ArenaError(f"{name} on {d} prompts: token counts differ (base inputs {h.shape[0]}, base outputs "
                             f"{x0.shape[0]}, tuned outputs {x1.shape[0]}); base and tuned must see the same tokens")
        x = DistributionInputs(name, d, dw, w0, h, x0, x1)
        values: dict[str, dict] = {}
        try:
            for m in units:
                if m.scope == "distribution":
                    with timer(m.timer_name):
                        values.setdefault(m.section, {}).update(m.compute(x))
        except ArenaError as e:
            raise ArenaError(f"{name} on {d} prompts: {e}") from None
        for sec, v in values.items():
            out[sec][d] = v
    for m in units:
        if m.scope == "module":
            with timer(m.timer_name):
                v = m.compute(ModuleInputs(name, dw, w0, out))
            if v is None:
                continue
            if m.slot is None:
                out[m.section] = v
            else:
                out[m.section][m.slot] = v
    return out


def summarize_modules(per_module: dict) -> dict:
    """{summary key: its aggregate over modules} for every registered scalar with a summary rule
    (the mean skips NaN and is None when no module has the value)."""
    return {s.key: AGGREGATIONS[s.summary]([s.value(m) for m in per_module.values()]) for s in summary_specs()}
