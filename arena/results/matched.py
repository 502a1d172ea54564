"""Matched-plasticity comparison along interpolation paths (pure pandas).

A method's forgetting at a fixed step count is confounded with how fast it learns (a method that
learns faster has moved further, and forgets more, at the same step). The interpolation path θ(α)
of each run traces target gain against forgetting from the base (α = 0) to the tuned model
(α = 1). Reading every path at one common target-gain level G compares methods at matched
plasticity:

    F_run(G) = forgetting where the run's path first reaches gain G, linear in α between the two
               bracketing points (the path is scored at a few α only)
    forgetting per unit of plasticity = F_run(G) / G

G defaults to the largest gain every path reaches (min over runs of max gain), so no value is
extrapolated. With several seeds per method the methods' F(G) are compared with Welch's t over
seeds; with one seed only the evaluation noise (the paired SE, interpolated the same way) is known,
and the result says that seed variance was not measured.
"""

from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from arena.results.load import Results
from arena.results.stats import compare_two, mean_ci

CURVE_COLUMNS = ["key", "run_id", "model", "target", "objective", "label", "method", "seed", "path", "kind", "alpha",
                 "gain", "gain_se", "forgetting", "forgetting_se"]


def _point_values(p: dict, p0: Optional[dict], axis: str) -> tuple[float, float]:
    a = p.get(axis) or {}
    d = a.get("delta")
    if d is None and p0 is not None and a.get("value") is not None:
        d = a["value"] - (p0.get(axis) or {}).get("value", math.nan)
    return (math.nan if d is None else float(d)), float(a.get("delta_se") or math.nan)


def interpolation_curves(results: Results) -> pd.DataFrame:
    """One row per (run, path, α) with gain and forgetting oriented so that up/down is better/worse:
    gain = target improvement over α = 0, forgetting = general loss vs α = 0 (NLL kind: −Δ target NLL and
    +Δ general NLL; accuracy kind: +Δ target and −Δ general)."""
    rows = []
    df = results.df
    for key, rec in results.records.items():
        interp = rec.interpolation
        if not isinstance(interp, dict):
            continue
        meta = df[df["key"] == key].iloc[0].to_dict() if len(df) and (df["key"] == key).any() else {}
        if meta.get("state") not in (None, "done", "incomplete"):
            continue
        for path, curve in interp.items():
            if not isinstance(curve, dict) or not curve.get("points"):
                continue
            sc = curve.get("scorer") or {}
            kind = sc.get("orientation") or sc.get("kind") or "nll"  # "kind" in records written before 2026-11
            pts = sorted(curve["points"], key=lambda p: p.get("alpha", 0))
            p0 = next((p for p in pts if p.get("alpha") == 0), None)
            for p in pts:
                dt, dt_se = _point_values(p, p0, "target")
                dg, dg_se = _point_values(p, p0, "general")
                gain, forg = (-dt, dg) if kind == "nll" else (dt, -dg)
                rows.append({"key": key, "run_id": meta.get("run_id", key), "model": meta.get("model"),
                             "target": meta.get("target"), "objective": meta.get("objective"),
                             "label": meta.get("label", curve.get("method")), "method": curve.get("method"),
                             "seed": meta.get("seed"), "path": path, "kind": kind, "alpha": float(p.get("alpha", math.nan)),
                             "gain": gain, "gain_se": dt_se, "forgetting": forg, "forgetting_se": dg_se})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def value_at_gain(curve: pd.DataFrame, level: float) -> Optional[dict]:
    """Forgetting (and α, SE) where the curve (sorted by α) first reaches `level`; None if it never does."""
    c = curve.sort_values("alpha")
    g, f, a, se = (c[k].tolist() for k in ("gain", "forgetting", "alpha", "forgetting_se"))
    for i in range(len(g) - 1):
        g0, g1 = g[i], g[i + 1]
        if any(math.isnan(v) for v in (g0, g1, f[i], f[i + 1])):
            continue
        if min(g0, g1) <= level <= max(g0, g1):
            t = 0.0 if g1 == g0 else (level - g0) / (g1 - g0)
            s0, s1 = (0.0 if math.isnan(se[i]) else se[i]), (0.0 if math.isnan(se[i + 1]) else se[i + 1])
            return {"forgetting": f[i] + t * (f[i + 1] - f[i]), "alpha": a[i] + t * (a[i + 1] - a[i]),
                    "se": s0 + t * (s1 - s0)}
    return None


def matched_plasticity(curves: pd.DataFrame, level: Optional[float] = None, path: Optional[str] = None) -> dict:
    """Per group (model, target, objective, scorer kind; `path` lists the paths its runs took): each run's forgetting at the common gain level,
    per-method summaries over seeds, and pairwise comparisons. Returns
    {"groups": [{"model", "target", "objective", "path", "kind", "level", "runs": DataFrame, "methods": DataFrame,
                 "pairs": DataFrame, "note"}]}."""
    out = {"groups": []}
    if not len(curves):
        return out
    c = curves if path is None else curves[curves["path"] == path]
    # The scorer kind is part of the group: an NLL gain (nats) and an accuracy gain (a share)
    # are different units, so one level G cannot be read off both kinds of curve.
    # Each method is read off its own path (OFT/BOFT: the Cayley generator; the others: θ0 + α·ΔW), so the
    # path is not part of the group: matching on target gain is what makes the paths comparable.
    for (model, target, objective, kind), g in c.groupby(["model", "target", "objective", "kind"], dropna=False):
        pth = ",".join(sorted(set(g["path"].astype(str))))
        maxgain = g.groupby("key")["gain"].max()
        lvl = level if level is not None else float(maxgain.min())
        grp = {"model": model, "target": target, "objective": objective, "path": pth, "kind": kind, "level": lvl}
        if not lvl > 0 or math.isnan(lvl):
            grp["note"] = "no common positive target gain along the paths: nothing to match"
            grp["runs"] = grp["methods"] = grp["pairs"] = pd.DataFrame()
            out["groups"].append(grp)
            continue
        runs = []
        for key, rc in g.groupby("key"):
            v = value_at_gain(rc, lvl)
            end = rc.sort_values("alpha").iloc[-1]
            runs.append({"key": key, "label": rc["label"].iloc[0], "method": rc["method"].iloc[0], "seed": rc["seed"].iloc[0],
                         "reached": v is not None, "alpha_at_level": v["alpha"] if v else math.nan,
                         "forgetting_at_level": v["forgetting"] if v else math.nan,
                         "forgetting_at_level_se": v["se"] if v else math.nan,
                         "forgetting_per_gain": (v["forgetting"] / lvl) if v else math.nan,
                         "gain_at_1": end["gain"], "forgetting_at_1": end["forgetting"],
                         "forgetting_per_gain_at_1": end["forgetting"] / end["gain"] if end["gain"] > 0 else math.nan})
        runs = pd.DataFrame(runs)
        methods = (runs.groupby("label").agg(seeds=("seed", "nunique"), forgetting_at_level=("forgetting_at_level", "mean"),
                                             sd=("forgetting_at_level", "std"), se_eval=("forgetting_at_level_se", "mean"),
                                             forgetting_per_gain=("forgetting_per_gain", "mean"),
                                             alpha_at_level=("alpha_at_level", "mean"))
                   .sort_values("forgetting_at_level").reset_index())
        ci = [mean_ci(runs.loc[runs.label == lab, "forgetting_at_level"], se) for lab, se in
              zip(methods["label"], methods["se_eval"])]
        methods["ci_lo"], methods["ci_hi"], methods["ci_kind"] = ([c[i] for c in ci] for i in range(3))
        pairs = []
        labels = list(methods["label"])
        for i, a in enumerate(labels):
            for b in labels[i + 1:]:
                ra, rb = runs[runs.label == a], runs[runs.label == b]
                r = compare_two(ra["forgetting_at_level"], rb["forgetting_at_level"],
                                float(ra["forgetting_at_level_se"].mean()), float(rb["forgetting_at_level_se"].mean()))
                pairs.append({"a": a, "b": b, **{k: v for k, v in r.items() if k != "note"}})
        grp.update(runs=runs, methods=methods, pairs=pd.DataFrame(pairs))
        one_seed = bool(len(methods)) and int(methods["seeds"].max()) < 2
        grp["note"] = ("one seed per method: seed variance was not measured; differences are judged against "
                       "the evaluation noise of the interpolated points only") if one_seed else \
            "differences tested with Welch's t over seeds (p < 0.05)"
        out["groups"].append(grp)
    return out
