"""Per-method tables the report and dashboard show beside the leaderboard (pure pandas):

- `benchmark_view`: every benchmark of every method, base and tuned accuracy, the paired Δ with its
  SE and the documents n, so a reader sees which benchmark moved an axis and how coarse it is;
- `diagnostics_view`: the paper's drift and geometry metrics per method, mean over seeds with a 95%
  interval (t over seeds; one seed: no interval, the seed variance is unknown).

Errors over seeds: with n >= 2 seeds the SE is s/√n of the per-seed values (it holds seed and
evaluation noise); with one seed it is the run's own paired evaluation SE (`se_kind` says which).
"""

from __future__ import annotations

import math

import pandas as pd

from arena.results.flatten import DIAG_PREFIX
from arena.results.stats import mean_ci, seed_mean_se

KEYS = ["model", "target", "objective", "label"]
DIAG_METRICS = ["csd_rel_general", "csd_un_general", "csd_ratio_rel", "procrustes_general", "gram_general",
                "cka_general"]


def _done(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["state"] == "done"] if "state" in df else df


def benchmark_view(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, target, objective, label, benchmark): seeds, n, base, tuned, delta, se, se_kind."""
    done = _done(df)
    names = sorted({c.split(":", 1)[1] for c in done.columns if c.startswith("bench_delta:")})
    rows = []
    for key, g in done.groupby([k for k in KEYS if k in done], dropna=False):
        where = dict(zip(KEYS, key))
        for b in names:
            d = g[f"bench_delta:{b}"].dropna()
            if not len(d):
                continue
            _, se, kind = seed_mean_se(g[f"bench_delta:{b}"], g[f"bench_se:{b}"])
            kind = kind.replace("eval SE", "paired eval SE")
            rows.append({**where, "benchmark": b, "seeds": len(d), "n": g.loc[d.index, f"bench_n:{b}"].max(),
                         "base": float(g.loc[d.index, f"bench_base:{b}"].mean()),
                         "tuned": float(g.loc[d.index, f"bench:{b}"].mean()), "delta": float(d.mean()), "se": se,
                         "beyond_2se": bool(se > 0 and abs(d.mean()) > 2 * se), "se_kind": kind})
    return pd.DataFrame(rows, columns=[*KEYS, "benchmark", "seeds", "n", "base", "tuned", "delta", "se", "beyond_2se",
                                       "se_kind"])


def diagnostics_view(df: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per (model, target, objective, label): for each metric its mean over seeds and 95% interval."""
    done = _done(df)
    metrics = [m for m in (metrics or DIAG_METRICS) if DIAG_PREFIX + m in done]
    rows = []
    if not metrics:
        return pd.DataFrame(columns=[*KEYS, "seeds"])
    for key, g in done.groupby([k for k in KEYS if k in done], dropna=False):
        row = {**dict(zip(KEYS, key)), "seeds": int(g[DIAG_PREFIX + metrics[0]].notna().sum())}
        for m in metrics:
            v = g[DIAG_PREFIX + m].dropna()
            lo, hi, _ = mean_ci(v)
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = (float(v.mean()) if len(v) else math.nan), lo, hi
        rows.append(row)
    return pd.DataFrame(rows)
