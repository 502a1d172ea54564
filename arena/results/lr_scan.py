"""The learning-rate axis (`lr_scan:` of a sweep): each method's best trade-off over lr, and the
method ordering at its own lr and at its best lr beside the PEFT-Arena paper's (pure pandas).

A method's trade-off at one lr is its forgetting per unit of target gain on the report's scale,

    r(lr) = max(forgetting(lr), 0) / gain(lr)      defined only where the gain is beyond noise (gain > 2 SE)

(less is better); its best lr is argmin r, ties (r = 0: no forgetting) going to the larger gain.
Forgetting is clipped at 0 because a signed ratio ranks backwards below it: at forgetting −0.01 a gain
of 0.5 gives −0.02 and a gain of 0.1 gives −0.1, so the dominated lr would win. With the clip an lr
that gains at least as much and forgets no more never ranks worse.

So "does OFT forget more because of its lr?" becomes: does OFT's rank among the methods by r change
between each method's own lr and each method's best lr? Orderings are compared with the paper's forgetting (base − tuned general accuracy, SFT) by
Spearman's ρ with a percentile bootstrap interval over seeds (each method's seed values resampled
with replacement; a method with one seed contributes no variance, and the result says how many had
two or more).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd

from arena.reports.paper import COLUMNS, METHOD_OF, PUBLISHED
from arena.results.scales import SCALES, SIGNAL_Z

GROUP = ["model", "target", "objective"]


def paper_forgetting(train: str = "SFT", target: Optional[str] = None) -> dict[str, dict[str, float]]:
    """{column: {arena method name: base − tuned general accuracy (points)}} from the paper's table;
    Math columns for math-like targets (math, arith), Med for medical, all four otherwise."""
    want = {"math": "Math", "arith": "Math", "medical": "Med"}.get(target or "")
    base = PUBLISHED[("—", "Base")]
    out = {}
    for ci, col in enumerate(COLUMNS):
        if want and not col.endswith(want):
            continue
        out[col] = {m: base[ci][1] - PUBLISHED[(train, row)][ci][1]
                    for m, row in METHOD_OF.items() if (train, row) in PUBLISHED}
    return out


def spearman_ci(values: dict[str, list[float]], ref: dict[str, float], n_boot: int = 2000, level: float = 0.95,
                seed: int = 0) -> dict:
    """Spearman ρ between the per-method means of `values` and `ref` over the methods both have, with a
    percentile bootstrap interval from resampling each method's values (module doc).
    {"rho", "lo", "hi", "n", "with_seeds"}; NaN where fewer than 3 methods or no variance to resample."""
    keys = [k for k in values if k in ref and len([v for v in values[k] if v == v])]
    out = {"rho": math.nan, "lo": math.nan, "hi": math.nan, "n": len(keys),
           "with_seeds": sum(len([v for v in values[k] if v == v]) >= 2 for k in keys)}
    if len(keys) < 3:
        return out
    r = pd.Series([ref[k] for k in keys])
    vals = [np.asarray([v for v in values[k] if v == v], float) for k in keys]
    out["rho"] = float(pd.Series([v.mean() for v in vals]).corr(r, method="spearman"))
    if not out["with_seeds"]:
        return out
    rng = np.random.default_rng(seed)
    means = np.stack([v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1) for v in vals], axis=1)
    ranks = pd.DataFrame(means).rank(axis=1).to_numpy()
    rr = r.rank().to_numpy()
    rc = ranks - ranks.mean(axis=1, keepdims=True)
    rrc = rr - rr.mean()
    den = np.sqrt((rc ** 2).sum(axis=1) * (rrc ** 2).sum())
    rho = np.where(den > 0, (rc * rrc).sum(axis=1) / np.where(den > 0, den, 1), np.nan)
    if np.isfinite(rho).any():
        out["lo"], out["hi"] = (float(q) for q in np.nanquantile(rho, [(1 - level) / 2, (1 + level) / 2]))
    return out


def _ratio(y: float, x: float, x_err: float) -> float:
    """max(y, 0) / x where the gain x is beyond noise, else NaN (module doc)."""
    learned = x > 0 and (not x_err == x_err or x > SIGNAL_Z * x_err)
    return max(y, 0.0) / x if learned and y == y else math.nan


def _versus_own(own, best, y: str) -> dict:
    """The best lr's forgetting minus the own lr's, with the SE of the difference (the two rows'
    errors in quadrature: seed SEMs or evaluation SEs) and whether it exceeds SIGNAL_Z of them."""
    if own is None or best is None or own["label"] == best["label"]:
        return {"forgetting_change": math.nan, "forgetting_change_se": math.nan, "change_beyond_noise": False}
    d, se = float(best[y] - own[y]), math.hypot(float(best[f"{y}_err"]), float(own[f"{y}_err"]))
    return {"forgetting_change": d, "forgetting_change_se": se,
            "change_beyond_noise": bool(se == se and se > 0 and abs(d) > SIGNAL_Z * se)}


def lr_view(lb: pd.DataFrame, runs: pd.DataFrame, scale: str) -> dict:
    """Per (model, target, objective) group with an lr scan: {"groups": [{model, target, objective,
    "table" (one row per method and lr), "best" (one row per method), "orderings" (ρ vs the paper),
    "answer" (sentences)}]}. `lb` is the leaderboard (one row per label), `runs` the per-run frame."""
    out = {"groups": [], "scale": scale}
    if not len(lb) or "lr_of" not in lb or not (lb["lr_factor"].fillna(1) != 1).any():
        return out
    s = SCALES[scale]
    x, y = s["x"], s["y"]
    done = runs[runs["state"] == "done"] if "state" in runs else runs
    for key, g in lb.groupby(GROUP, dropna=False):
        where = dict(zip(GROUP, key))
        if not (g["lr_factor"].fillna(1) != 1).any():
            continue
        rows = []
        for _, r in g.iterrows():
            rows.append({"method": r["lr_of"], "label": r["label"], "lr": r.get("lr"), "lr_factor": r["lr_factor"],
                         "seeds": r["seeds"], x: r[x], f"{x}_err": r[f"{x}_err"], y: r[y], f"{y}_err": r[f"{y}_err"],
                         "forgetting_per_gain": _ratio(r[y], r[x], r[f"{x}_err"])})
        table = pd.DataFrame(rows).sort_values(["method", "lr_factor"]).reset_index(drop=True)
        best_rows, own_vals, best_vals = [], {}, {}
        sub = done
        for k, v in where.items():
            sub = sub[sub[k] == v] if k in sub else sub
        for meth, t in table.groupby("method", sort=False):
            own = t[t["lr_factor"] == 1]
            ok = t[t["forgetting_per_gain"].notna()]
            b = ok.sort_values(["forgetting_per_gain", x], ascending=[True, False]).iloc[0] if len(ok) else None
            o = own.iloc[0] if len(own) else None
            method_name = str(sub[sub["lr_of"] == meth]["method"].iloc[0]) if (sub["lr_of"] == meth).any() else meth
            best_rows.append({"method": meth, "lrs": len(t), "own_lr": o["lr"] if o is not None else math.nan,
                              "own_ratio": o["forgetting_per_gain"] if o is not None else math.nan,
                              "best_lr": b["lr"] if b is not None else math.nan,
                              "best_factor": b["lr_factor"] if b is not None else math.nan,
                              "best_ratio": b["forgetting_per_gain"] if b is not None else math.nan,
                              "best_seeds": b["seeds"] if b is not None else 0, "_name": method_name,
                              **_versus_own(o, b, y)})
            for lab, dest in ((o["label"] if o is not None else None, own_vals), (b["label"] if b is not None else None, best_vals)):
                if lab is None:
                    continue
                rr = sub[sub["label"] == lab]
                dest[method_name] = [_ratio(a, c, math.nan) for a, c in zip(rr[y], rr[x])]
        best = pd.DataFrame(best_rows)
        best["own_rank"] = best["own_ratio"].rank()
        best["best_rank"] = best["best_ratio"].rank()
        orderings = []
        for col, ref in paper_forgetting(target=where["target"]).items():
            for what, vals in (("own lr", own_vals), ("best lr", best_vals)):
                orderings.append({"ordering": f"forgetting per gain at each method's {what}", "paper column": col,
                                  **spearman_ci(vals, ref)})
        grp = {**where, "table": table, "best": best.drop(columns="_name"), "orderings": pd.DataFrame(orderings)}
        grp["answer"] = _answer(best, scale)
        out["groups"].append(grp)
    return out


def _answer(best: pd.DataFrame, scale: str) -> list[str]:
    """One sentence per method: its rank at its own lr and at its best lr."""
    n = int(best["own_ratio"].notna().sum())
    out = []
    for _, r in best.iterrows():
        change = "" if r["forgetting_change"] != r["forgetting_change"] else (
            f" Its forgetting there differs from its own lr's by {r['forgetting_change']:+.3g} ± "
            f"{r['forgetting_change_se']:.2g} (SE): " + ("beyond noise." if r["change_beyond_noise"] else
                                                       "within noise, so the scan does not show an lr effect."))
        if r["best_ratio"] != r["best_ratio"]:
            out.append(f"{r['method']}: no lr of the scan gains beyond 2 SE on the {scale} scale, so its trade-off is not measured.")
            continue
        own = "no gain beyond noise at its own lr" if r["own_ratio"] != r["own_ratio"] else \
            f"{r['own_ratio']:.3g} forgetting per unit gain at its own lr {r['own_lr']:.3g} (rank {int(r['own_rank'])} of {n})"
        if r["best_ratio"] == 0:
            out.append(f"{r['method']}: {own}; gains without forgetting on the {scale} scale at lr {r['best_lr']:.3g} "
                       f"(x{r['best_factor']:g}, the largest such gain; {int(r['best_seeds'])} seed(s)).{change}")
            continue
        out.append(f"{r['method']}: {own}; best {r['best_ratio']:.3g} at lr {r['best_lr']:.3g} "
                   f"(x{r['best_factor']:g}, rank {int(r['best_rank'])} of {int(best['best_ratio'].notna().sum())}, "
                   f"{int(r['best_seeds'])} seed(s)).{change}")
    return out
