"""Incomplete learning (ILP) across runs: unlearned fractions, causes and mitigation effects.

Pure functions over loaded records (`arena.results.load.Results`) and the per-sample files their
`record["ilp"]` points to (`ilp.files.samples`, relative to the run folder; written by
`arena.ilp.run.ilp_run`). Nothing here imports torch. Three tables:

- `ilp_runs`: one row per finished run with an ilp section — the unlearned fraction k/n with its
  Wilson 95% interval and the share of each cause among the unlearned samples (k_c / k, Wilson);
- `run_groups` / `cause_table`: the same pooled over the seeds of a run group (model, target,
  objective, label, mitigation): k and n summed, so the interval treats the seeds' tested samples
  as independent trials (they are the same samples of different runs: the pooled interval is a
  little narrow when seeds agree sample by sample);
- `mitigation_effects`: each mitigation run against its baseline — the plain SFT run with the
  same model, target, objective, method config and seed — as the paired difference of unlearned
  status on the samples both tested (same `key`):

      effect = mean_i (u_mit,i − u_base,i),  u ∈ {0, 1}   (negative: the mitigation learned more)

  with a seeded percentile bootstrap 95% interval over samples (resampled within each pair when
  seeds are pooled), and the forgetting difference (mitigated − baseline) where both records carry
  general evaluation results (`arena.results.flatten`: accuracy `forgetting`, proxy `forgetting_nll`).
  "Beyond noise" means the interval excludes 0.
"""

from __future__ import annotations

import json
import math
from typing import Optional

import numpy as np
import pandas as pd

from arena.ilp.settings import CAUSE_NAMES, CAUSES
from arena.ilp.stats import wilson
from arena.results.flatten import get_path, to_float
from arena.results.load import Results
from arena.results.run_record import RunRecord

CAUSE_ORDER = (*CAUSES, "unexplained")
GROUP = ["model", "target", "objective", "label", "mitigation"]
BASELINE = "none"  # the mitigation column of a plain SFT run


def ilp_of(rec: RunRecord) -> Optional[dict]:
    """record["ilp"] (kept in `extra` by readers that predate the section), or None."""
    v = getattr(rec, "ilp", None)
    if v is None:
        v = rec.extra.get("ilp")
    return v if isinstance(v, dict) else None


def has_ilp(res: Results) -> bool:
    """Whether any finished run carries an ilp section."""
    done = set(res.done["key"]) if len(res.done) else set()
    return any(ilp_of(r) for k, r in res.records.items() if k in done)


def wilson_ci(k, n) -> tuple[float, float]:
    """The Wilson 95% interval of k/n (`arena.ilp.stats.wilson`); (nan, nan) when n is 0 or missing."""
    try:
        ci = wilson(int(k), int(n))
    except (TypeError, ValueError):
        ci = None
    return (ci[0], ci[1]) if ci else (math.nan, math.nan)


def mitigation_name(ilp: dict) -> str:
    """'none' for a plain SFT run, else the mitigation names joined with '+' (e.g. 'bucketing')."""
    m = ilp.get("mitigation")
    if not isinstance(m, dict):
        return BASELINE
    names = m.get("names") or sorted(m.get("options") or {})
    return "+".join(str(n) for n in names) or BASELINE


def _method_config(rec: RunRecord) -> str:
    return json.dumps(get_path(rec.config, "method") or get_path(rec.method, "name"), sort_keys=True, default=str)


def ilp_runs(res: Results) -> pd.DataFrame:
    """One row per finished run with an ilp section (columns in the module docstring)."""
    rows = []
    for _, r in res.done.iterrows() if len(res.done) else []:
        rec = res.records[r["key"]]
        ilp = ilp_of(rec)
        if not ilp:
            continue
        u = ilp.get("unlearned") or {}
        k, n = u.get("k"), u.get("n")
        lo, hi = wilson_ci(k, n)
        row = {"key": r["key"], "run_id": r["run_id"], "sweep": r["sweep"], "model": r["model"], "target": r["target"],
               "objective": r["objective"], "label": r["label"], "method": r["method"],
               "method_config": _method_config(rec), "seed": r["seed"], "mitigation": mitigation_name(ilp),
               "mitigation_options": json.dumps((ilp.get("mitigation") or {}).get("options") or {}, sort_keys=True),
               "probe": ilp.get("probe"), "k": to_float(k), "n": to_float(n),
               "fraction": to_float(k) / to_float(n) if to_float(n) > 0 else math.nan, "ci_low": lo, "ci_high": hi,
               "threshold": to_float(u.get("threshold")), "pass_n": to_float(u.get("pass_n")),
               "stable_over": len(u.get("stable_over") or []) or 1,
               "forgetting": to_float(r.get("forgetting")), "forgetting_se": to_float(r.get("forgetting_se")),
               "forgetting_nll": to_float(r.get("forgetting_nll")),
               "forgetting_nll_se": to_float(r.get("forgetting_nll_se"))}
        causes = ilp.get("causes") or {}
        for c in CAUSE_ORDER:
            cv = causes.get(c) or {}
            tested = bool(cv) and cv.get("tested", True) is not False and cv.get("k") is not None
            ck = to_float(cv.get("k")) if tested else math.nan
            row[f"{c}_tested"] = tested
            row[f"{c}_k"] = ck
            row[f"{c}_share"] = ck / row["k"] if tested and row["k"] > 0 else math.nan
            row[f"{c}_low"], row[f"{c}_high"] = wilson_ci(ck, k) if tested else (math.nan, math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def run_groups(runs: pd.DataFrame) -> pd.DataFrame:
    """Seeds pooled per run group: runs, seeds, k and n summed, fraction with its Wilson interval,
    and the per-seed spread (min, max of the runs' fractions)."""
    if not len(runs):
        return pd.DataFrame()
    out = []
    for g, d in runs.groupby(GROUP, dropna=False, sort=True):
        k, n = d["k"].sum(), d["n"].sum()
        lo, hi = wilson_ci(k, n)
        out.append({**dict(zip(GROUP, g)), "runs": len(d), "seeds": d["seed"].nunique(), "k": k, "n": n,
                    "fraction": k / n if n else math.nan, "ci_low": lo, "ci_high": hi,
                    "fraction_min": d["fraction"].min(), "fraction_max": d["fraction"].max(),
                    "probe": ",".join(sorted({str(p) for p in d["probe"].dropna()}))})
    return pd.DataFrame(out)


def group_name(row) -> str:
    """A run group's short name: label, with the mitigation when there is one (lora · bucketing)."""
    m, label = row["mitigation"], str(row["label"])
    return label if m == BASELINE or str(m) in label else f"{label} · {m}"


def cause_table(res: Results, runs: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One row per run group and cause: k_c and the unlearned k summed over the runs where the cause
    was tested, share = k_c / k with its Wilson interval, the rule text, why it was not tested,
    one example prompt, and the runs it was tested in."""
    runs = ilp_runs(res) if runs is None else runs
    if not len(runs):
        return pd.DataFrame()
    out = []
    for g, d in runs.groupby(GROUP, dropna=False, sort=True):
        recs = [ilp_of(res.records[k]) or {} for k in d["key"]]
        for c in CAUSE_ORDER:
            t = d[d[f"{c}_tested"]]
            ck, k = t[f"{c}_k"].sum(), t["k"].sum()
            lo, hi = wilson_ci(ck, k) if len(t) else (math.nan, math.nan)
            cvs = [(r.get("causes") or {}).get(c) or {} for r in recs]
            example = next((e for cv in cvs for e in cv.get("examples") or [] if isinstance(e, dict)), {})
            missing = sorted({str(cv["missing"]) for cv in cvs if cv.get("missing")})
            out.append({**dict(zip(GROUP, g)), "cause": c, "name": CAUSE_NAMES.get(c, "no rule matched"),
                        "tested_runs": len(t), "runs": len(d), "k": ck if len(t) else math.nan,
                        "unlearned": k if len(t) else math.nan,
                        "share": ck / k if len(t) and k else math.nan, "ci_low": lo, "ci_high": hi,
                        "rule": next((cv["rule"] for cv in cvs if cv.get("rule")), ""),
                        "missing": "; ".join(missing) or None, "example_prompt": example.get("prompt"),
                        "example_reference": example.get("reference"), "example_prediction": example.get("prediction")})
    return pd.DataFrame(out)


def overlap_table(res: Results, runs: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Unlearned samples matched by more than one cause, per run group: (group, causes, count)."""
    runs = ilp_runs(res) if runs is None else runs
    out = []
    for g, d in (runs.groupby(GROUP, dropna=False, sort=True) if len(runs) else []):
        total: dict[str, float] = {}
        for key in d["key"]:
            for combo, v in ((ilp_of(res.records[key]) or {}).get("overlaps") or {}).items():
                total[combo] = total.get(combo, 0) + to_float(v)
        out += [{**dict(zip(GROUP, g)), "causes": c, "count": v} for c, v in sorted(total.items())]
    return pd.DataFrame(out)


def examples_table(res: Results, runs: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """The example unlearned samples each run's record carries, one row per (run, cause, example)."""
    runs = ilp_runs(res) if runs is None else runs
    out = []
    for _, r in runs.iterrows() if len(runs) else []:
        causes = (ilp_of(res.records[r["key"]]) or {}).get("causes") or {}
        for c in CAUSE_ORDER:
            for e in (causes.get(c) or {}).get("examples") or []:
                if isinstance(e, dict):
                    out.append({"group": group_name(r), "run_id": r["run_id"], "seed": r["seed"], "cause": c,
                                "index": e.get("index"), "prompt": e.get("prompt"), "reference": e.get("reference"),
                                "prediction": e.get("prediction"), "causes": "+".join(e.get("causes") or [c])})
    return pd.DataFrame(out)


def read_samples(res: Results, key: str) -> Optional[dict[str, bool]]:
    """sample key -> unlearned, from the run's <run>/ilp/samples.jsonl (the path its record gives);
    None when the record has no ilp section or the file is missing. A line cut by a crash is skipped."""
    ilp = ilp_of(res.records[key]) or {}
    rel = get_path(ilp, "files", "samples")
    if not rel:
        return None
    run_dir = res.root if (res.root / "record.json").is_file() else res.root / key  # a lone run folder: root
    p = run_dir / rel
    if not p.is_file():
        return None
    out = {}
    for ln in p.read_text().splitlines():
        try:
            s = json.loads(ln)
        except json.JSONDecodeError:
            continue
        if isinstance(s, dict) and "key" in s:
            out[str(s["key"])] = bool(s.get("unlearned"))
    return out


def paired_bootstrap(diffs: list[np.ndarray], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95% interval of the mean of the concatenated paired differences, resampling each
    array (one per run pair) with replacement on its own, so every bootstrap mean weighs the pairs
    as the estimate does. Seeded: the same inputs give the same interval."""
    diffs = [np.asarray(d, dtype=float) for d in diffs if len(d)]
    if not diffs:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    total = sum(len(d) for d in diffs)
    means = np.zeros(n_boot)
    for d in diffs:
        means += d[rng.integers(0, len(d), size=(n_boot, len(d)))].sum(axis=1)
    means /= total
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def _pairs(res: Results, runs: pd.DataFrame) -> list[dict]:
    """Each mitigation run with its baseline run and the paired unlearned differences."""
    if not len(runs):
        return []
    match = ["model", "target", "objective", "method_config", "seed"]
    base = runs[runs["mitigation"] == BASELINE]
    out = []
    for _, m in runs[runs["mitigation"] != BASELINE].iterrows():
        cand = base
        for c in match:
            cand = cand[cand[c].astype(str) == str(m[c])]
        pair = {"mitigated": m, "baseline": None, "d": np.zeros(0), "note": None}
        if not len(cand):
            pair["note"] = "no baseline run (same model, target, objective, method config and seed, no mitigation)"
            out.append(pair)
            continue
        b = cand.sort_values("key").iloc[0]
        pair["baseline"] = b
        if len(cand) > 1:
            pair["note"] = f"{len(cand)} baseline runs match; paired with {b['run_id']}"
        sm, sb = read_samples(res, m["key"]), read_samples(res, b["key"])
        if sm is None or sb is None:
            pair["note"] = "per-sample file missing (ilp/samples.jsonl) for " + \
                           " and ".join(x for x, s in ((m["run_id"], sm), (b["run_id"], sb)) if s is None)
        else:
            shared = sorted(set(sm) & set(sb))
            pair["d"] = np.array([float(sm[k]) - float(sb[k]) for k in shared])
            pair["base_u"] = np.array([float(sb[k]) for k in shared])
            if not shared:
                pair["note"] = "no tested sample in common (different ilp.samples / ilp.seed?)"
        out.append(pair)
    return out


def _forgetting_diff(pairs: list[dict], col: str) -> tuple[float, float]:
    """Mean over pairs of (mitigated − baseline) forgetting; SE over seeds with >= 2 pairs (seed and
    evaluation noise), else the hypot of the two evaluation SEs. NaN unless both runs were evaluated."""
    vals, ses = [], []
    for p in pairs:
        m, b = p["mitigated"], p["baseline"]
        if b is None or math.isnan(m[col]) or math.isnan(b[col]):
            continue
        vals.append(m[col] - b[col])
        ses.append(math.hypot(to_float(m[col + "_se"]), to_float(b[col + "_se"])))
    if not vals:
        return math.nan, math.nan
    if len(vals) >= 2:
        return float(np.mean(vals)), float(np.std(vals, ddof=1) / math.sqrt(len(vals)))
    return vals[0], ses[0]


def mitigation_effects(res: Results, runs: Optional[pd.DataFrame] = None, *, per: str = "group",
                       n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The effect of each mitigation on the unlearned share (module docstring): one row per
    (baseline group, mitigation) with the seeds pooled (per="group"), or per run pair (per="pair").

    Columns: model, target, objective, label (the baseline's), mitigation, pairs, n (paired samples),
    baseline / mitigated (unlearned fractions on those samples), effect, ci_low, ci_high,
    beyond_noise, d_forgetting(_se), d_forgetting_nll(_se), runs, baselines, note.
    """
    if per not in ("group", "pair"):
        raise ValueError(f"per={per!r}: allowed: group, pair")
    runs = ilp_runs(res) if runs is None else runs
    pairs = _pairs(res, runs)
    if per == "pair":
        buckets = [[p] for p in pairs]
    else:
        by: dict[tuple, list] = {}
        for p in pairs:
            m, b = p["mitigated"], p["baseline"]
            lab = b["label"] if b is not None else m["label"]
            # method_config too: a label names one method config within a sweep, not across sweeps
            by.setdefault((m["model"], m["target"], m["objective"], m["method_config"], lab, m["mitigation"]),
                          []).append(p)
        buckets = list(by.values())
    out = []
    for ps in buckets:
        m0, b0 = ps[0]["mitigated"], ps[0]["baseline"]
        ds = [p["d"] for p in ps if len(p["d"])]
        n = sum(len(d) for d in ds)
        effect = float(np.concatenate(ds).mean()) if n else math.nan
        base = float(np.concatenate([p["base_u"] for p in ps if len(p["d"])]).mean()) if n else math.nan
        lo, hi = paired_bootstrap(ds, n_boot, seed)
        fa, fa_se = _forgetting_diff(ps, "forgetting")
        fn, fn_se = _forgetting_diff(ps, "forgetting_nll")
        row = {"model": m0["model"], "target": m0["target"], "objective": m0["objective"],
               "label": b0["label"] if b0 is not None else m0["label"], "mitigation": m0["mitigation"],
               "mitigation_options": m0["mitigation_options"], "pairs": len(ds), "n": n,
               "baseline": base, "mitigated": base + effect if n else math.nan, "effect": effect,
               "ci_low": lo, "ci_high": hi, "beyond_noise": bool(n and (lo > 0 or hi < 0)),
               "d_forgetting": fa, "d_forgetting_se": fa_se, "d_forgetting_nll": fn, "d_forgetting_nll_se": fn_se,
               "runs": ",".join(p["mitigated"]["run_id"] for p in ps),
               "baselines": ",".join(p["baseline"]["run_id"] for p in ps if p["baseline"] is not None),
               "note": "; ".join(p["note"] for p in ps if p["note"]) or None}
        if per == "pair":
            row["seed"] = m0["seed"]
        out.append(row)
    return pd.DataFrame(out)


def ilp_summary(res: Results, n_boot: int = 2000, seed: int = 0) -> Optional[dict]:
    """Everything the report and the dashboard show, or None when no finished run has an ilp section."""
    runs = ilp_runs(res)
    if not len(runs):
        return None
    return {"runs": runs, "groups": run_groups(runs), "causes": cause_table(res, runs),
            "overlaps": overlap_table(res, runs), "examples": examples_table(res, runs),
            "effects": mitigation_effects(res, runs, n_boot=n_boot, seed=seed)}
