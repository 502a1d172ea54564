"""Leaderboard exports as CSV, JSON, Markdown and LaTeX text (pure pandas)."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd

EXPORT_COLUMNS = ["model", "target", "objective", "label", "seeds", "target_gain", "target_gain_err", "forgetting",
                  "forgetting_err", "plasticity_nll", "plasticity_nll_err", "forgetting_nll", "forgetting_nll_err",
                  "forgetting_per_gain", "pareto", "trainable_params", "train_s", "peak_memory_mb", "err_kind"]


def format_cell(v) -> str:
    """A table cell as text: – for missing, yes/blank for booleans, thousands separators, 4 decimals
    below 10, 3 significant digits for very large or very small values."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else ""
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)) and float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        a = abs(float(v))
        if a and (a >= 1e5 or a < 1e-3):
            return f"{float(v):.3g}"
        return f"{float(v):.4f}" if a < 10 else f"{float(v):,.1f}"
    return str(v)


def to_markdown(df: pd.DataFrame, columns: Optional[list] = None) -> str:
    cols = [c for c in (columns or df.columns) if c in df]
    if not cols:
        return "_(no rows)_\n"
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(format_cell(r[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESC = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
              "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--", "±": r"$\pm$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESC.get(ch, ch) for ch in str(text))


def to_latex(df: pd.DataFrame, columns: Optional[list] = None, caption: str = "") -> str:
    cols = [c for c in (columns or df.columns) if c in df]
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{" + "l" * min(4, len(cols)) + "r" * max(0, len(cols) - 4) + "}",
             r"\toprule", " & ".join(latex_escape(c) for c in cols) + r" \\", r"\midrule"]
    for _, r in df.iterrows():
        lines.append(" & ".join(latex_escape(format_cell(r[c])) for c in cols) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + latex_escape(caption) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def export(df: pd.DataFrame, fmt: str, columns: Optional[list] = None) -> str:
    """The leaderboard (or any frame) as csv | json | md | tex text."""
    cols = [c for c in (columns or EXPORT_COLUMNS) if c in df] if len(df) else []
    d = df[cols] if cols else df
    if fmt == "csv":
        return d.to_csv(index=False)
    if fmt == "json":
        return d.to_json(orient="records", indent=1)
    if fmt in ("md", "markdown"):
        return to_markdown(d)
    if fmt in ("tex", "latex"):
        return to_latex(d)
    raise ValueError(f"unknown export format {fmt!r}; allowed: csv, json, md, tex")
