"""Selecting runs: the values a column takes, rows whose columns take selected values."""

from __future__ import annotations

from typing import Iterable, Optional

import pandas as pd


def options(df: pd.DataFrame, column: str) -> list:
    """The distinct non-null values of `column`, sorted (empty when the column is absent)."""
    if not len(df) or column not in df:
        return []
    return sorted(v for v in df[column].dropna().unique())


def filter_runs(df: pd.DataFrame, **selected: Optional[Iterable]) -> pd.DataFrame:
    """Keep rows whose column is in the selected values (None or empty: no filter on that column)."""
    out = df
    for col, values in selected.items():
        if values is None or col not in out:
            continue
        values = list(values)
        if values:
            out = out[out[col].isin(values)]
    return out


def seed_values(df: pd.DataFrame, label: str, column: str, **where) -> pd.Series:
    """`column` of the finished runs of method `label` (one value per seed), where column == value."""
    d = filter_runs(df[df["state"] == "done"], label=[label], **{k: [v] for k, v in where.items()})
    return d[column].dropna()
