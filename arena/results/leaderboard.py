"""The leaderboard: one row per (model, target, objective, method label), means over seeds.

Error bars: with two or more seeds sqrt(s²/n + ē²), the seed SEM with the runs' evaluation SE
(the seeds share the documents, whose noise the seed mean keeps: results.stats.seed_mean_se), else
the evaluation's own SE — and then seed variance was not measured (`err_kind` says which).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd

from arena.results.flatten import DIAG_PREFIX
from arena.results.pareto import pareto_front
from arena.results.scales import SCALES, pick_scale
from arena.results.stats import seed_mean_se

RUN_KEYS = ["model", "target", "objective", "label", "method"]
MEAN_COLUMNS = ("general_acc", "target_acc", "general_acc_base", "target_acc_base", "trainable_params",
                "trainable_fraction", "train_s", "wall_s", "tokens_per_s", "lr")


def _agg(values: pd.Series, ses: Optional[pd.Series]) -> tuple[float, float, str]:
    return seed_mean_se(values, ses if ses is not None else math.nan)


def leaderboard(df: pd.DataFrame, scale: Optional[str] = None) -> pd.DataFrame:
    """Means over seeds with error bars (module doc), the Pareto flag and forgetting per unit of
    gain (y / x where x > 0), sorted front first, then by gain. `attrs["scale"]` holds the scale."""
    done = df[df["state"] == "done"] if len(df) and "state" in df else df
    if not len(done):
        return pd.DataFrame()
    scale = scale or pick_scale(done)
    keys = [k for k in RUN_KEYS if k in done]
    rows = []
    for key, g in done.groupby(keys, dropna=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        for col in ("lr_of", "lr_factor"):  # one value per label (arena.sweeps.spec.LrScanSpec)
            if col in g:
                row[col] = g[col].iloc[0]
        row["seeds"] = int(g["seed"].nunique()) if "seed" in g else len(g)
        row["runs"] = len(g)
        for sc in SCALES.values():
            for ax in ("x", "y"):
                col, se_col = sc[ax], sc[f"{ax}_se"]
                m, e, kind = _agg(g[col], g[se_col] if se_col in g else None) if col in g else (math.nan, math.nan, "")
                row[col], row[col + "_err"] = m, e
                if sc is SCALES[scale] and ax == "x" or (sc is SCALES[scale] and not row.get("err_kind")):
                    row["err_kind"] = kind
        for col in MEAN_COLUMNS:
            if col in g:
                row[col] = float(g[col].mean())
        if "peak_memory_mb" in g:
            row["peak_memory_mb"] = float(g["peak_memory_mb"].max())
        for col in g.columns:
            if col.startswith(("bench_delta:", DIAG_PREFIX)):
                row[col] = float(g[col].mean())
        row["keys"] = ",".join(g["key"])
        rows.append(row)
    lb = pd.DataFrame(rows)
    s = SCALES[scale]
    if s["x"] in lb and s["y"] in lb:
        lb["forgetting_per_gain"] = np.where(lb[s["x"]] > 0, lb[s["y"]] / lb[s["x"]], np.nan)
        lb["pareto"] = pareto_front(lb, scale)
        lb = lb.sort_values(["pareto", s["x"]], ascending=[False, False], kind="stable").reset_index(drop=True)
    else:
        lb["pareto"] = False
    lb.attrs["scale"] = scale
    return lb
