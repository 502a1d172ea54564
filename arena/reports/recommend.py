"""Method recommendations per scenario, derived only from the measured leaderboard.

Scenarios (per model × target × objective):
- quick single-task adaptation: the most target gain; when the runner-up is within noise, the
  cheaper one to train is named too;
- maximum target gain under a forgetting budget B (default 2 accuracy points, or 0.05 nats of
  general ΔCE on the proxy scale): the most gain among methods whose forgetting is <= B;
- best retention: the least forgetting among methods that measurably learned the target
  (gain > 2 SE; if none did, any positive gain).

Every pick comes with its numbers and a comparison with the runner-up (Welch's t over seeds, or the
evaluation SEs with one seed); when the difference is within noise the recommendation says so.
"""

from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from arena.results.filters import seed_values
from arena.results.scales import SCALES
from arena.results.stats import compare_two

DEFAULT_BUDGET = {"accuracy": 0.02, "proxy": 0.05}


def _fmt(v: float, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:+.1f} pts" if unit == "accuracy" else f"{v:+.3f} nats"


def _pm(v: float, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f" ± {100 * v:.1f}" if unit == "accuracy" else f" ± {v:.3f}"


def _compare(df: pd.DataFrame, lb: pd.DataFrame, col: str, a: pd.Series, b: pd.Series, where: dict) -> dict:
    va = seed_values(df, a["label"], col, **where) if df is not None and len(df) else pd.Series([a[col]])
    vb = seed_values(df, b["label"], col, **where) if df is not None and len(df) else pd.Series([b[col]])
    if not len(va):
        va = pd.Series([a[col]])
    if not len(vb):
        vb = pd.Series([b[col]])
    return compare_two(va, vb, float(a.get(col + "_err", math.nan)), float(b.get(col + "_err", math.nan)))


def _noise_text(cmp: dict, a: str, b: str, what: str) -> str:
    if cmp["test"] == "welch":
        verdict = "within noise" if cmp["within_noise"] else "a real difference"
        p = "p < 0.001" if cmp["p"] < 0.001 else f"p = {cmp['p']:.3f}"
        return f"{a} vs {b} on {what}: Welch t = {cmp['stat']:.2f}, {p} over seeds {cmp['seeds']} — {verdict}."
    verdict = "within noise (|diff| < 2 SE)" if cmp["within_noise"] else "beyond 2 SE of evaluation noise"
    return (f"{a} vs {b} on {what}: diff {cmp['diff']:+.4g}, z = {cmp['stat']:.2f} from evaluation SEs — {verdict}. "
            "One seed: training-seed variance was not measured.")


def recommend(lb: pd.DataFrame, scale: str, runs: Optional[pd.DataFrame] = None,
              budget: Optional[float] = None) -> list[dict]:
    """Recommendations for every (model, target, objective) group of a leaderboard."""
    s = SCALES[scale]
    x, y, unit = s["x"], s["y"], s["unit"]
    budget = DEFAULT_BUDGET[scale] if budget is None else budget
    out = []
    if not len(lb) or x not in lb or y not in lb:
        return out
    for (model, target, objective), g in lb.groupby(["model", "target", "objective"], dropna=False):
        g = g[g[x].notna() & g[y].notna()]
        where = {"model": model, "target": target, "objective": objective}
        head = {"model": model, "target": target, "objective": objective, "scale": scale}
        if not len(g):
            continue
        ranked = g.sort_values(x, ascending=False)
        best = ranked.iloc[0]
        rec = {**head, "scenario": "quick single-task adaptation",
               "question": "Which method learns the target most within the same budget?", "pick": best["label"]}
        why = [f"{best['label']} gains {_fmt(best[x], unit)}{_pm(best.get(x + '_err'), unit)} on the target "
               f"(forgetting {_fmt(best[y], unit)}), trained in {best.get('train_s', math.nan):.0f}s."]
        if len(ranked) > 1:
            second = ranked.iloc[1]
            cmp = _compare(runs, lb, x, best, second, where)
            why.append(f"runner-up {second['label']}: {_fmt(second[x], unit)}{_pm(second.get(x + '_err'), unit)}.")
            why.append(_noise_text(cmp, best["label"], second["label"], "target gain"))
            rec["within_noise"] = cmp["within_noise"]
            if cmp["within_noise"] and second.get("train_s", math.inf) < best.get("train_s", math.inf):
                why.append(f"Within noise of each other, {second['label']} is cheaper to train "
                           f"({second['train_s']:.0f}s vs {best['train_s']:.0f}s).")
        rec["why"] = " ".join(why)
        out.append(rec)

        ok = g[g[y] <= budget].sort_values(x, ascending=False)
        rec = {**head, "scenario": f"max target under a forgetting budget ({_fmt(budget, unit).lstrip('+')})",
               "question": f"Which method gains most while forgetting at most {_fmt(budget, unit).lstrip('+')}?"}
        if len(ok):
            b = ok.iloc[0]
            rec["pick"] = b["label"]
            why = [f"{b['label']}: gain {_fmt(b[x], unit)}{_pm(b.get(x + '_err'), unit)} with forgetting "
                   f"{_fmt(b[y], unit)}{_pm(b.get(y + '_err'), unit)} (within the budget)."]
            over = g[g[y] > budget]
            if len(over):
                why.append("Over the budget: " + ", ".join(f"{r['label']} ({_fmt(r[y], unit)})" for _, r in over.iterrows()) + ".")
            if len(ok) > 1:
                cmp = _compare(runs, lb, x, b, ok.iloc[1], where)
                why.append(_noise_text(cmp, b["label"], ok.iloc[1]["label"], "target gain"))
                rec["within_noise"] = cmp["within_noise"]
            near = g[(g[y] > budget) & (g[y] - 2 * g.get(y + "_err", 0).fillna(0) <= budget)]
            if len(near):
                why.append("Within noise of the budget line: " + ", ".join(near["label"]) + ".")
            rec["why"] = " ".join(why)
        else:
            rec["pick"] = None
            least = g.sort_values(y).iloc[0]
            rec["why"] = (f"No method stays within the budget; the least forgetting is {least['label']} "
                          f"({_fmt(least[y], unit)}). An interpolation α < 1 of a run trades gain for retention "
                          "(see the interpolation section).")
        out.append(rec)

        err = g.get(x + "_err", pd.Series(math.nan, index=g.index)).fillna(0)
        learned = g[g[x] > 2 * err]
        basis = "measurably learned the target (gain > 2 SE)"
        if not len(learned):
            learned, basis = g[g[x] > 0], "gained anything on the target (none beyond 2 SE)"
        rec = {**head, "scenario": "best retention",
               "question": "Which method keeps the most general ability while still learning the target?"}
        if len(learned):
            r = learned.sort_values(y).iloc[0]
            rec["pick"] = r["label"]
            why = [f"Among methods that {basis}, {r['label']} forgets least: {_fmt(r[y], unit)}"
                   f"{_pm(r.get(y + '_err'), unit)} (gain {_fmt(r[x], unit)})."]
            rest = learned.sort_values(y)
            if len(rest) > 1:
                cmp = _compare(runs, lb, y, r, rest.iloc[1], where)
                why.append(_noise_text(cmp, r["label"], rest.iloc[1]["label"], "forgetting"))
                rec["within_noise"] = cmp["within_noise"]
            if "forgetting_per_gain" in r and not math.isnan(r.get("forgetting_per_gain", math.nan)):
                why.append(f"Forgetting per unit of gain: {r['forgetting_per_gain']:.3f}.")
            rec["why"] = " ".join(why)
        else:
            rec["pick"] = None
            rec["why"] = "No method gained on the target; there is nothing to retain against."
        out.append(rec)
    return out
