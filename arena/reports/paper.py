"""PEFT-Arena's published numbers (the paper's project-page table) and the comparison of measured
method orderings with them.

The paper evaluates with OpenCompass on vLLM; arena evaluates with lm-eval, so only the *shape* is
comparable: method orderings, compared with Spearman's ρ and Kendall's τ over the methods both have.
"""

from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from arena.results.scales import SCALES

PAPER = "peft-arena"
CITATION = "PEFT-Arena (arXiv 2605.28819), project page table; Target / General accuracy in %"
COLUMNS = ["Qwen2.5-7B Math", "Qwen2.5-7B Med", "Llama3.2-3B Math", "Llama3.2-3B Med"]

# (train, method) -> [(target, general) per column in COLUMNS]
PUBLISHED = {
    ("—", "Base"): [(35.30, 46.97), (46.36, 46.97), (27.80, 53.03), (41.44, 53.03)],
    ("SFT", "Full FT"): [(50.63, 34.22), (53.63, 34.41), (33.90, 39.83), (44.26, 26.03)],
    ("SFT", "OFT b32"): [(46.93, 44.37), (48.63, 42.40), (30.60, 40.73), (39.50, 40.50)],
    ("SFT", "LoRA r8 α16"): [(42.47, 39.22), (47.91, 36.06), (24.07, 36.57), (38.34, 27.99)],
    ("SFT", "PiSSA r8 α16"): [(44.53, 24.78), (26.16, 18.05), (0.67, 9.74), (21.17, 12.92)],
    ("SFT", "VeRA r256"): [(39.43, 47.25), (28.50, 47.01), (28.80, 46.79), (40.68, 48.94)],
    ("RLVR", "Full FT"): [(47.57, 48.68), (46.24, 43.22), (29.80, 52.20), (45.88, 51.81)],
    ("RLVR", "OFT b32"): [(47.90, 48.90), (46.79, 47.24), (29.97, 50.04), (44.99, 52.31)],
    ("RLVR", "LoRA r8 α16"): [(46.93, 48.27), (47.08, 42.80), (28.83, 52.17), (44.97, 53.53)],
}

METHOD_OF = {"full": "Full FT", "oft": "OFT b32", "lora": "LoRA r8 α16", "pissa": "PiSSA r8 α16", "vera": "VeRA r256"}
TRAIN_OF = {"sft": "SFT", "grpo": "RLVR"}


def published_frame() -> pd.DataFrame:
    rows = []
    for (train, method), vals in PUBLISHED.items():
        for col, (t, g) in zip(COLUMNS, vals):
            rows.append({"train": train, "method": method, "column": col, "target": t, "general": g})
    return pd.DataFrame(rows)


def column_for(model: Optional[str], target: Optional[str]) -> Optional[str]:
    """The published column a measured (model, target) corresponds to, if any."""
    m = (model or "").lower().replace("-", "").replace("_", "").replace(".", "")
    family = "Qwen2.5-7B" if "qwen257b" in m else "Llama3.2-3B" if "llama323b" in m else None
    tgt = {"math": "Math", "medical": "Med"}.get(target or "")
    return f"{family} {tgt}" if family and tgt else None


def reference_columns(target: Optional[str]) -> list[str]:
    tgt = {"math": "Math", "medical": "Med"}.get(target or "")
    return [c for c in COLUMNS if tgt and c.endswith(tgt)]


def rank_correlation(a: list[float], b: list[float]) -> dict:
    """Spearman ρ and Kendall τ(-b) between two paired lists (n >= 3, else NaN)."""
    d = pd.DataFrame({"a": a, "b": b}).dropna()
    n = len(d)
    if n < 3 or d["a"].nunique() < 2 or d["b"].nunique() < 2:
        return {"n": n, "spearman": math.nan, "kendall": math.nan}
    return {"n": n, "spearman": float(d["a"].corr(d["b"], method="spearman")),
            "kendall": float(d["a"].corr(d["b"], method="kendall"))}


def paper_table(lb: pd.DataFrame, scale: str) -> dict:
    """Measured rows laid out like the paper's table, with the published numbers beside them.

    Returns {"groups": [{"model", "target", "columns", "table": DataFrame, "correlations": DataFrame}]}.
    Measured values on the accuracy scale are in % like the paper's; on the proxy scale the
    orderings use plasticity and −ΔCE (higher = better on both, as accuracy is).
    """
    pub = published_frame()
    out = {"groups": [], "scale": scale}
    if not len(lb):
        return out
    for (model, target), g in lb.groupby(["model", "target"], dropna=False):
        col = column_for(model, target)
        cols = [col] if col else reference_columns(target)
        rows = []
        base = g.iloc[0]
        if scale == "accuracy":
            rows.append({"train": "—", "method": "Base", "measured_target": 100 * base.get("target_acc_base", math.nan),
                         "measured_general": 100 * base.get("general_acc_base", math.nan)})
        for _, r in g.iterrows():
            meth = METHOD_OF.get(str(r["method"]))
            train = TRAIN_OF.get(str(r["objective"]), str(r["objective"]))
            if scale == "accuracy":
                mt, mg = 100 * r.get("target_acc", math.nan), 100 * r.get("general_acc", math.nan)
            else:
                mt, mg = r.get(SCALES["proxy"]["x"], math.nan), -r.get(SCALES["proxy"]["y"], math.nan)
            rows.append({"train": train, "method": meth or r["label"], "label": r["label"],
                         "measured_target": mt, "measured_general": mg})
        t = pd.DataFrame(rows)
        for c in cols:
            p = pub[pub.column == c].set_index(["train", "method"])
            t[f"{c} target"] = [p["target"].get((a, b), math.nan) for a, b in zip(t["train"], t["method"])]
            t[f"{c} general"] = [p["general"].get((a, b), math.nan) for a, b in zip(t["train"], t["method"])]
        corr = []
        for c in cols:
            for train in sorted(set(t["train"]) - {"—"}):
                sub = t[(t["train"] == train)]
                for axis in ("target", "general"):
                    rc = rank_correlation(list(sub[f"measured_{axis}"]), list(sub[f"{c} {axis}"]))
                    corr.append({"column": c, "train": train, "axis": axis, **rc})
        out["groups"].append({"model": model, "target": target, "columns": cols, "table": t,
                              "correlations": pd.DataFrame(corr, columns=["column", "train", "axis", "n", "spearman",
                                                                          "kendall"]),
                              "matched_column": col is not None})
    return out
