"""Objectives compared on one model, target and method: the RL / distillation view of a sweep.

For every group of finished runs sharing (model, target, method label) that holds two or more
objectives, per objective over its seeds (k runs):

- `heldout_gain`: the probe's greedy accuracy on held-out problems, tuned − start, where "start"
  is the run's own start model (the warm start under `model.init_from`), mean over seeds. Its SE is
  the larger of two noise estimates: the seed SE sd/√k (k ≥ 2) and the evaluation SE
  √(mean_r(se_r²) / k), with se_r paired over the same problems when the record keeps per-problem
  outcomes (`paired_gain`), else two binomial SEs combined (conservative).
- `forgetting_nll`: the eval stage's general ΔCE proxy (rise of NLL on the base model's own
  responses to general prompts; against the catalogue base model, so a shared warm start adds the
  same amount to every objective), mean, with the same SE rule.
- `reward_last`: the logged `reward_mean` over the last `tail` steps, mean over seeds (the
  distillation objectives log the target's reward without training on it).
- `s_per_step`: mean training seconds per step; and the objective's own diagnostics, averaged
  over all steps and seeds (`DIAGNOSTICS`).

`pairs` sets each objective against the reference objective (GRPO when present): the difference of
means with SE √(SE_a² + SE_b²), "beyond noise" when |Δ| > 2 SE. With 2 seeds the seed SE is itself
very noisy; the table says k.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd

from arena.results.flatten import get_path, to_float
from arena.results.load import Results

DIAGNOSTICS = ("teacher_share", "routed_sdpo", "gated", "weight_std", "distill_loss", "overlap", "reverse_kl",
               "teacher_entropy", "clip_fraction", "response_length")
REFERENCE = "grpo"


def _noise_se(values: list[float], eval_ses: list[float]) -> float:
    k = len(values)
    seed = float(np.std(values, ddof=1)) / math.sqrt(k) if k >= 2 else math.nan
    ev = math.sqrt(float(np.nanmean(np.square(eval_ses))) / k) if eval_ses else math.nan
    return float(np.nanmax([seed, ev])) if not (math.isnan(seed) and math.isnan(ev)) else math.nan


def paired_gain(base: dict, tuned: dict) -> tuple[float, float, str]:
    """(tuned − base accuracy, its SE, "paired" | "unpaired") for two probe results on one problem set.

    With per-example outcomes on the same problems (same length): the SE of the mean difference,
    sd(t_i − b_i)/√n; otherwise √(se_b² + se_t²), which treats the two as independent samples and
    overstates the noise of a before/after difference."""
    gain = to_float(tuned.get("accuracy")) - to_float(base.get("accuracy"))
    b, t = base.get("per_example"), tuned.get("per_example")
    if isinstance(b, list) and isinstance(t, list) and len(b) == len(t) > 1:
        d = np.asarray(t, dtype=float) - np.asarray(b, dtype=float)
        return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), "paired"
    return gain, math.hypot(to_float(base.get("se")), to_float(tuned.get("se"))), "unpaired"


def heldout_columns(rec) -> dict:
    """The probe's held-out greedy accuracy at the start and after, and the gain with its SE
    (`paired_gain`); {} when the record has no greedy probe."""
    b, t = get_path(rec.probes, "base", "greedy"), get_path(rec.probes, "tuned", "greedy")
    if not (isinstance(b, dict) and isinstance(t, dict)):
        return {}
    gain, se, kind = paired_gain(b, t)
    return {"start_acc": to_float(b.get("accuracy")), "heldout_acc": to_float(t.get("accuracy")), "heldout_gain": gain,
            "heldout_gain_se": se, "heldout_se_kind": kind, "heldout_n": to_float(t.get("n"))}


def run_rows(res: Results, tail: int = 10) -> pd.DataFrame:
    """One row per finished run: held-out gain (and its SE), forgetting proxy, reward, speed, diagnostics."""
    rows = []
    for r in res.done.itertuples():
        rec = res.records.get(r.key)
        if rec is None:
            continue
        log = res.train_log(r.key)
        row = {"key": r.key, "model": r.model, "target": r.target, "label": r.label, "objective": r.objective,
               "seed": r.seed, "forgetting_nll": to_float(getattr(r, "forgetting_nll", math.nan)),
               "forgetting_nll_se": to_float(getattr(r, "forgetting_nll_se", math.nan)), **heldout_columns(rec)}
        if len(log):
            if "reward_mean" in log:
                row["reward_first"] = float(log["reward_mean"].head(tail).mean())
                row["reward_last"] = float(log["reward_mean"].tail(tail).mean())
            if "seconds" in log:
                row["s_per_step"] = float(log["seconds"].mean())
            for d in DIAGNOSTICS:
                if d in log:
                    row[d] = float(log[d].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _summaries(g: pd.DataFrame) -> pd.DataFrame:
    out = []
    for obj, h in g.groupby("objective", sort=False):
        row = {"objective": obj, "seeds": int(h["seed"].nunique())}
        for col in ("heldout_gain", "forgetting_nll"):
            if col in h and h[col].notna().any():
                vals = h[col].dropna().tolist()
                row[col] = float(np.mean(vals))
                row[col + "_se"] = _noise_se(vals, h[col + "_se"].dropna().tolist())
        for col in ("start_acc", "heldout_acc", "reward_first", "reward_last", "s_per_step", *DIAGNOSTICS):
            if col in h and h[col].notna().any():
                row[col] = float(h[col].mean())
        out.append(row)
    return pd.DataFrame(out)


def _pairs(summary: pd.DataFrame, reference: str) -> pd.DataFrame:
    ref = summary[summary["objective"] == reference]
    if not len(ref):
        return pd.DataFrame()
    ref = ref.iloc[0]
    rows = []
    for s in summary.itertuples():
        if s.objective == reference:
            continue
        row = {"objective": s.objective, "vs": reference}
        for col in ("heldout_gain", "forgetting_nll"):
            a, se_a = getattr(s, col, math.nan), getattr(s, col + "_se", math.nan)
            b, se_b = ref.get(col, math.nan), ref.get(col + "_se", math.nan)
            d, se = to_float(a) - to_float(b), math.hypot(to_float(se_a), to_float(se_b))
            row[f"d_{col}"], row[f"d_{col}_se"] = d, se
            row[f"{col}_beyond_noise"] = bool(abs(d) > 2 * se) if not math.isnan(d) and not math.isnan(se) else None
        rows.append(row)
    return pd.DataFrame(rows)


def reward_curves(res: Results, keys: list[str]) -> pd.DataFrame:
    """reward_mean per logged step for the given runs: columns key, objective, seed, step, reward."""
    rows = []
    for key in keys:
        log = res.train_log(key)
        if not len(log) or "reward_mean" not in log:
            continue
        obj = res.df.loc[res.df["key"] == key, "objective"].iloc[0]
        seed = res.df.loc[res.df["key"] == key, "seed"].iloc[0]
        rows += [{"key": key, "objective": obj, "seed": seed, "step": int(s), "reward": float(v)}
                 for s, v in zip(log["step"], log["reward_mean"])]
    return pd.DataFrame(rows)


def objectives_summary(res: Results, reference: str = REFERENCE) -> Optional[dict]:
    """{"groups": [{model, target, label, summary, pairs, curves, note}]}, or None when no group of
    finished runs compares two objectives."""
    runs = run_rows(res)
    if not len(runs):
        return None
    groups = []
    for (model, target, label), g in runs.groupby(["model", "target", "label"], sort=False, dropna=False):
        if g["objective"].nunique() < 2:
            continue
        summary = _summaries(g)
        ref = reference if reference in set(summary["objective"]) else summary["objective"].iloc[0]
        seeds = sorted(summary["seeds"].unique())
        kinds = sorted(set(g["heldout_se_kind"].dropna())) if "heldout_se_kind" in g else []
        note = (f"{len(g)} runs; seeds per objective: {', '.join(map(str, seeds))}. Held-out gain = greedy "
                f"accuracy after − at the start model (n = {int(g['heldout_n'].max()) if 'heldout_n' in g else '?'} "
                f"problems; evaluation SE {' and '.join(kinds) or 'n/a'}: paired over the same problems where the "
                "records keep per-problem outcomes, else two binomial SEs combined, which overstates it); ± = the "
                f"larger of the seed SE and the evaluation SE; Δ vs {ref} beyond noise when |Δ| > 2 SE.")
        if max(seeds) < 2:
            note += " One seed: seed variance was not measured."
        groups.append({"model": model, "target": target, "label": label, "reference": ref, "summary": summary,
                       "pairs": _pairs(summary, ref), "curves": reward_curves(res, g["key"].tolist()), "note": note})
    return {"groups": groups} if groups else None


def _pm(v, se, pct: bool = False) -> str:
    v, se = to_float(v), to_float(se)
    if math.isnan(v):
        return "–"
    if pct:
        return f"{100 * v:+.1f} ± {100 * se:.1f} pp" if not math.isnan(se) else f"{100 * v:+.1f} pp"
    return f"{v:+.4f} ± {se:.4f}" if not math.isnan(se) else f"{v:+.4f}"


def display_tables(group: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-objective table, pairs table) of one group, as strings for the report."""
    s = group["summary"]
    f = lambda col, fmt: [fmt.format(v) if v == v else "–" for v in s.get(col, pd.Series([math.nan] * len(s)))]  # noqa: E731
    table = pd.DataFrame({
        "objective": s["objective"], "seeds": s["seeds"],
        "start acc": f("start_acc", "{:.3f}"), "held-out acc": f("heldout_acc", "{:.3f}"),
        "held-out gain": [_pm(r.get("heldout_gain"), r.get("heldout_gain_se"), pct=True) for _, r in s.iterrows()],
        "general ΔCE": [_pm(r.get("forgetting_nll"), r.get("forgetting_nll_se")) for _, r in s.iterrows()],
        "reward first→last 10": [f"{r['reward_first']:.3f} → {r['reward_last']:.3f}" if r.get("reward_last") == r.get("reward_last")
                                 and "reward_last" in r else "–" for _, r in s.iterrows()],
        "s/step": f("s_per_step", "{:.2f}"),
        "diagnostics": [", ".join(f"{d} {r[d]:.3f}" for d in DIAGNOSTICS if d in r and r[d] == r[d]
                                  and d not in ("response_length", "clip_fraction")) for _, r in s.iterrows()]})
    p = group["pairs"]
    pairs = pd.DataFrame()
    if len(p):
        verdict = lambda b: "beyond noise" if b is True else ("within noise" if b is False else "–")  # noqa: E731
        pairs = pd.DataFrame({
            "objective": p["objective"], "vs": p["vs"],
            "Δ held-out gain": [_pm(r.d_heldout_gain, r.d_heldout_gain_se, pct=True) for r in p.itertuples()],
            "gain verdict": [verdict(b) for b in p["heldout_gain_beyond_noise"]],
            "Δ general ΔCE": [_pm(r.d_forgetting_nll, r.d_forgetting_nll_se) for r in p.itertuples()],
            "forgetting verdict": [verdict(b) for b in p["forgetting_nll_beyond_noise"]]})
    return table, pairs
