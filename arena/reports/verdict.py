"""The report's headline: the matched-plasticity verdict, in sentences, from
`arena.results.matched.matched_plasticity` (forgetting read off every method's interpolation path at
one common target gain, so a method that learns faster is not charged for having moved further).

A pair of methods is called different only when the test says so (Welch's t over seeds, p < 0.05;
one seed: |z| >= 2 from the evaluation SEs, and the sentence says seed variance was not measured).
"""

from __future__ import annotations


import pandas as pd

from arena.results.lr_scan import paper_forgetting, spearman_ci

UNITS = {"nll": "nats of general ΔCE", "accuracy": "general accuracy (share)"}


def _iv(v, lo, hi) -> str:
    if v is None or v != v:
        return "n/a"
    if lo == lo and hi == hi:
        return f"{v:.4g} [{lo:.4g}, {hi:.4g}]"
    return f"{v:.4g}"


def verdict(group: dict) -> dict:
    """{"title", "table", "sentences"} for one matched group (empty table when nothing could be matched)."""
    title = (f"{group['model']} · {group['target']} · {group['objective']} — {group['path']} path, "
             f"{group.get('kind', 'nll')} scorer")
    m = group.get("methods")
    if m is None or not len(m):
        return {"title": title, "table": pd.DataFrame(), "sentences": [group.get("note", "nothing to match")]}
    t = m.copy()
    t.insert(0, "rank", range(1, len(t) + 1))
    cols = [c for c in ("rank", "label", "seeds", "forgetting_at_level", "ci_lo", "ci_hi", "ci_kind",
                        "forgetting_per_gain", "alpha_at_level") if c in t]
    unit = UNITS.get(str(group.get("kind")), "forgetting")
    first = t.iloc[0]
    s = [f"At a common target gain of {group['level']:.4g} ({'nats of held-out target NLL' if group.get('kind') == 'nll' else 'accuracy'}), "
         f"{len(t)} method(s) compared; forgetting in {unit}, mean over seeds with its 95% interval "
         f"({first.get('ci_kind', '')})" + (". Every method is scored on the same prompts, so the intervals and tests "
                                             "hold the training seeds' spread, not the prompts' sampling noise, which "
                                             "the methods share:" if str(first.get("ci_kind", "")).startswith("t over")
                                             else ":")]
    s.append("; ".join(f"{r['label']} {_iv(r['forgetting_at_level'], r.get('ci_lo'), r.get('ci_hi'))}"
                       for _, r in t.iterrows()) + ".")
    pairs = group.get("pairs")
    if pairs is not None and len(pairs):
        real = pairs[~pairs["within_noise"].astype(bool)]
        for _, p in real.iterrows():
            lo, hi = (p["a"], p["b"]) if p["diff"] < 0 else (p["b"], p["a"])
            how = (f"Welch p = {p['p']:.3g}" if p["test"] == "welch" else
                   f"z = {abs(p['stat']):.1f} from evaluation SEs, seed variance not measured")
            s.append(f"{lo} forgets less than {hi} at matched gain, by {abs(p['diff']):.3g} ({how}).")
        tied = pairs[pairs["within_noise"].astype(bool)]
        if len(tied):
            s.append("Within noise of each other: " + ", ".join(f"{p['a']} ~ {p['b']}" for _, p in tied.iterrows()) + ".")
        if not len(real):
            s.append(f"No method's forgetting at matched gain differs from another's beyond noise; "
                     f"the ordering above ({first['label']} first) is not a verdict.")
    s.append(group.get("note", ""))
    s += paper_sentences(group)
    return {"title": title, "table": t[cols], "sentences": [x for x in s if x]}


def paper_sentences(group: dict) -> list[str]:
    """The matched ordering against the PEFT-Arena paper's forgetting ordering (SFT), per column:
    Spearman ρ with a bootstrap interval over seeds (arena.results.lr_scan.spearman_ci). Only runs at
    each method's own lr (lr_scan runs have labels of their own and are left out)."""
    runs = group.get("runs")
    if runs is None or not len(runs) or "method" not in runs:
        return []
    own = runs[runs["label"] == runs["method"]] if (runs["label"] == runs["method"]).any() else runs
    vals = {str(m): list(g["forgetting_at_level"]) for m, g in own.groupby("method")}
    out = []
    for col, ref in paper_forgetting(target=str(group.get("target"))).items():
        r = spearman_ci(vals, ref)
        if r["rho"] != r["rho"]:
            continue
        ci = f" [{r['lo']:.2f}, {r['hi']:.2f}]" if r["lo"] == r["lo"] else " (no interval: one seed per method)"
        out.append(f"Against the paper ({col}, SFT forgetting): Spearman ρ = {r['rho']:.2f}{ci} over {r['n']} methods "
                   f"({r['with_seeds']} with >= 2 seeds); ρ = 1 is the paper's ordering.")
    return out


def headline(matched: dict) -> list[dict]:
    """Verdicts for every matched group, NLL scorer first (it resolves the smallest changes)."""
    groups = sorted(matched.get("groups", []), key=lambda g: (str(g.get("kind")) != "nll", str(g.get("target"))))
    return [verdict(g) for g in groups]


