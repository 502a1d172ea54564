"""Pareto fronts on (general, target): target gain up, forgetting down."""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import pandas as pd

from arena.results.scales import SCALES

GROUP = ["model", "target", "objective"]  # runs are only comparable within one of these groups


def pareto_mask(x: Iterable[float], y: Iterable[float]) -> np.ndarray:
    """Non-dominated points when maximising both x and y (NaN points are never on the front).

    A point i is dominated when some j has x_j >= x_i and y_j >= y_i with one of them strict.
    O(n²); leaderboards are small.
    """
    x, y = np.asarray(list(x), float), np.asarray(list(y), float)
    ok = ~(np.isnan(x) | np.isnan(y))
    mask = np.zeros(len(x), bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        mask[i] = not dominated.any()
    return mask


def pareto_front(df: pd.DataFrame, scale: str, by: Optional[list] = None) -> pd.Series:
    """Boolean Series: on the (general, target) front — gain up, forgetting down — within each group."""
    s = SCALES[scale]
    if not len(df) or s["x"] not in df or s["y"] not in df:
        return pd.Series(False, index=df.index)
    by = [c for c in (by or GROUP) if c in df]
    out = pd.Series(False, index=df.index)
    groups = df.groupby(by, dropna=False) if by else [(None, df)]
    for _, g in groups:
        out.loc[g.index] = pareto_mask(g[s["x"]], -g[s["y"]])
    return out
