"""Diagnostic metric vs forgetting, per (model, target, objective), with bootstrap intervals and the
PEFT-Arena paper's published values beside them (pure numpy/pandas).

Pooling runs of different models, targets or objectives correlates their differences in scale, not
the metric's link to forgetting, so every correlation here is within one group. Over the group's n
finished runs (pairs (m_i, f_i)):

    Pearson  r = Σ (m_i − m̄)(f_i − f̄) / sqrt( Σ (m_i − m̄)² Σ (f_i − f̄)² )
    Spearman ρ = Pearson r of the ranks

each with a 95% percentile bootstrap interval from resampling the n pairs with replacement (B = 2000,
seeded; resamples with a constant column are dropped). With n < 5 no interval is given: a
correlation of 3 or 4 points has no useful interval.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd

from arena.results.flatten import DIAG_PREFIX

# The paper's metric-vs-forgetting correlations (Pearson, Spearman), over its methods, models and targets.
PAPER = {"procrustes_general": (0.711, 0.568), "gram_general": (0.485, 0.361), "cka_general": (-0.761, -0.711),
         "csd_rel_general": (0.347, 0.317), "csd_un_general": (0.481, 0.603)}
GROUP = ["model", "target", "objective"]
MIN_CI = 5
COLUMNS = ["model", "target", "objective", "metric", "n", "pearson", "pearson_lo", "pearson_hi", "spearman",
           "spearman_lo", "spearman_hi", "paper_pearson", "paper_spearman"]


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson r of two (B, n) arrays; NaN for a row with a constant column."""
    ac, bc = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((ac ** 2).sum(axis=1) * (bc ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-300, (ac * bc).sum(axis=1) / den, np.nan)


def _ranks(a: np.ndarray) -> np.ndarray:
    return pd.DataFrame(a).rank(axis=1).to_numpy()


def correlation_ci(m, f, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Pearson and Spearman of paired values with bootstrap intervals (module doc)."""
    m, f = np.asarray(m, float), np.asarray(f, float)
    ok = ~(np.isnan(m) | np.isnan(f))
    m, f = m[ok], f[ok]
    n = len(m)
    out = {"n": n, **{k: math.nan for k in ("pearson", "pearson_lo", "pearson_hi", "spearman", "spearman_lo",
                                             "spearman_hi")}}
    if n < 3 or np.ptp(m) == 0 or np.ptp(f) == 0:
        return out
    out["pearson"] = float(_pearson_rows(m[None], f[None])[0])
    out["spearman"] = float(_pearson_rows(_ranks(m[None]), _ranks(f[None]))[0])
    if n < MIN_CI:
        return out
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    q = [(1 - level) / 2, (1 + level) / 2]
    for name, (a, b) in (("pearson", (m[idx], f[idx])), ("spearman", (_ranks(m[idx]), _ranks(f[idx])))):
        r = _pearson_rows(a, b)
        if np.isfinite(r).sum() >= n_boot // 2:
            out[f"{name}_lo"], out[f"{name}_hi"] = (float(v) for v in np.nanquantile(r, q))
    return out


def metric_vs_forgetting(df: pd.DataFrame, against: str, metrics: Optional[list] = None, **kw) -> pd.DataFrame:
    """One row per (model, target, objective, metric): n, Pearson/Spearman with intervals, the paper's."""
    done = df[df["state"] == "done"] if "state" in df else df
    if against not in done or not len(done):
        return pd.DataFrame(columns=COLUMNS)
    metrics = metrics or [c for c in done.columns if c.startswith(DIAG_PREFIX)]
    rows = []
    for key, g in done.groupby([k for k in GROUP if k in done], dropna=False):
        where = dict(zip(GROUP, key if isinstance(key, tuple) else (key,)))
        for col in metrics:
            if col not in g:
                continue
            name = col.removeprefix(DIAG_PREFIX)
            pp, ps = PAPER.get(name, (math.nan, math.nan))
            rows.append({**where, "metric": name, **correlation_ci(g[col], g[against], **kw),
                         "paper_pearson": pp, "paper_spearman": ps})
    out = pd.DataFrame(rows, columns=COLUMNS)
    # the paper's five first, then the rest in registry order
    order = {k: i for i, k in enumerate(PAPER)}
    return out.sort_values(by=["model", "target", "objective", "metric"],
                           key=lambda c: c.map(lambda v: order.get(v, len(order))) if c.name == "metric" else c,
                           kind="stable").reset_index(drop=True)
