"""Per-run detail tables (benchmarks, modules) and the correlation of diagnostics with forgetting."""

from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from arena.analysis.metrics import summary_specs
from arena.results.flatten import DIAG_PREFIX, get_path
from arena.results.run_record import RunRecord

# Every per-module scalar the run summary averages, as (column, path into the module's dict), from the
# diagnostic metric registry (torch-free metadata), so one metric has one name in both tables and a
# new registered metric appears here without an edit.
MODULE_COLUMNS = [(s.key, tuple(s.path)) for s in summary_specs()]


def benchmark_table(rec: RunRecord) -> pd.DataFrame:
    """One row per benchmark (and per NLL proxy) of the run's evaluation: base, tuned, Δ, SE, n."""
    cmp = get_path(rec.eval, "compare") or {}
    plan = get_path(rec.eval, "tuned", "plan") or {}
    axis_of = {b: axis for axis, names in plan.items() for b in names}
    rows = [{"benchmark": n, "axis": axis_of.get(n, ""), "base": b.get("base"), "tuned": b.get("tuned"),
             "delta": b.get("delta"), "se": b.get("se"), "n": b.get("n"), "paired": b.get("paired")}
            for n, b in (cmp.get("benchmarks") or {}).items()]
    for name, p in (cmp.get("proxies") or {}).items():
        rows.append({"benchmark": f"{name} (proxy, nats)", "axis": "general" if name == "general_nll" else "target",
                     "base": p.get("base"), "tuned": p.get("tuned"), "delta": p.get("delta"), "se": p.get("se"),
                     "n": p.get("n"), "paired": True})
    return pd.DataFrame(rows)


def module_table(rec: RunRecord) -> pd.DataFrame:
    """Per-module diagnostics of one run: a `module` column, then MODULE_COLUMNS (None where absent)."""
    mods = get_path(rec.diagnostics, "modules") or {}
    rows = [{"module": name, **{col: get_path(m, *path) for col, path in MODULE_COLUMNS}} for name, m in mods.items()]
    return pd.DataFrame(rows, columns=["module", *(col for col, _ in MODULE_COLUMNS)])


def metric_correlations(df: pd.DataFrame, against: str, metrics: Optional[list] = None) -> pd.DataFrame:
    """Pearson and Spearman correlation of each diagnostic with `against` (e.g. forgetting) across the
    finished runs; NaN with fewer than 3 runs or a constant column."""
    done = df[df["state"] == "done"] if "state" in df else df
    metrics = metrics or [c for c in done.columns if c.startswith(DIAG_PREFIX)]
    rows = []
    for m in metrics:
        d = done[[m, against]].dropna() if against in done else pd.DataFrame()
        n = len(d)
        ok = n >= 3 and d[m].nunique() > 1 and d[against].nunique() > 1
        rows.append({"metric": m.removeprefix(DIAG_PREFIX), "n": n,
                     "pearson": float(d[m].corr(d[against])) if ok else math.nan,
                     "spearman": float(d[m].corr(d[against], method="spearman")) if ok else math.nan})
    return pd.DataFrame(rows, columns=["metric", "n", "pearson", "spearman"])
