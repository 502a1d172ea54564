"""The two scales runs are compared on, and which one carries signal.

Two scales, because a 135M model's accuracies often sit at the floor:

    accuracy  x = target gain  (tuned − base target-axis accuracy)      y = forgetting (base − tuned general)
    proxy     x = plasticity   (base − tuned held-out target NLL, nats)  y = forgetting (general ΔCE, nats)

On both, "better" is more x and less y. The column names are those of `arena.results.flatten`.
"""

from __future__ import annotations

import math

import pandas as pd

from arena.results.stats import seed_mean_se

SCALES = {
    "accuracy": {"x": "target_gain", "x_se": "target_gain_se", "y": "forgetting", "y_se": "forgetting_se",
                 "x_label": "target gain (accuracy, tuned − base)",
                 "y_label": "forgetting (general accuracy, base − tuned)", "unit": "accuracy"},
    "proxy": {"x": "plasticity_nll", "x_se": "plasticity_nll_se", "y": "forgetting_nll", "y_se": "forgetting_nll_se",
              "x_label": "plasticity (held-out target NLL drop, nats)",
              "y_label": "forgetting (general ΔCE, nats)", "unit": "nats"},
}


def has_scale(df: pd.DataFrame, scale: str) -> bool:
    x, y = SCALES[scale]["x"], SCALES[scale]["y"]
    return len(df) > 0 and x in df and y in df and bool((df[x].notna() & df[y].notna()).any())


# A scale's axis carries signal when some method's value, or some difference between two methods,
# is at least this many standard errors from zero: the "beyond 2 SE" of a verdict.
SIGNAL_Z = 2.0
GROUP_KEYS = ["model", "target", "objective", "label"]


def axis_signal(df: pd.DataFrame, col: str, se_col: str) -> dict:
    """How far the axis `col` stands out of its noise, over the method groups (GROUP_KEYS) of `df`:

        per group g:  m_g = mean over seeds,  e_g = sqrt(s²/n + ē²) (results.stats.seed_mean_se)
        z_value = max_g |m_g| / e_g                          (a method moved beyond noise)
        z_diff  = max_{g,h} |m_g − m_h| / sqrt(e_g² + e_h²)  (two methods differ beyond noise)

    Returns {"z_value", "z_diff", "z": max of the two, "groups", "max_se"} (NaN where nothing is known)."""
    done = df[df["state"] == "done"] if "state" in df else df
    if col not in done or not done[col].notna().any():
        return {"z_value": math.nan, "z_diff": math.nan, "z": math.nan, "groups": 0, "max_se": math.nan}
    keys = [k for k in GROUP_KEYS if k in done]
    ms, es = [], []
    for _, g in done.groupby(keys, dropna=False):
        v = g[col].dropna()
        if not len(v):
            continue
        m, e, _ = seed_mean_se(g[col], g[se_col] if se_col in g else math.nan)  # positional: NaN rows dropped together
        ms.append(m)
        es.append(e)
    zv = [abs(m) / e for m, e in zip(ms, es) if e > 0]
    zd = [abs(ms[i] - ms[j]) / math.hypot(es[i], es[j]) for i in range(len(ms)) for j in range(i + 1, len(ms))
          if es[i] > 0 or es[j] > 0]
    zv_, zd_ = (max(zv) if zv else math.nan), (max(zd) if zd else math.nan)
    finite = [e for e in es if e == e]
    return {"z_value": zv_, "z_diff": zd_, "z": max((z for z in (zv_, zd_) if z == z), default=math.nan),
            "groups": len(ms), "max_se": max(finite) if finite else math.nan}


def scale_signal(df: pd.DataFrame) -> dict:
    """{scale: {"x": axis_signal, "y": axis_signal, "signal": both axes at >= SIGNAL_Z}} for every scale."""
    out = {}
    done = df[df["state"] == "done"] if "state" in df else df
    # target accuracies at the floor (0 before and after in every run) carry no signal whatever their SEs say
    floor = "target_acc" in done and len(done) > 0 and bool(((done["target_acc"].fillna(0) == 0)
                                                            & (done["target_acc_base"].fillna(0) == 0)).all())
    for name, sc in SCALES.items():
        x, y = axis_signal(df, sc["x"], sc["x_se"]), axis_signal(df, sc["y"], sc["y_se"])
        if name == "accuracy" and floor:
            x = {**x, "z": 0.0, "floor": True}
        out[name] = {"x": x, "y": y, "present": has_scale(df, name),
                     "signal": bool(x["z"] >= SIGNAL_Z and y["z"] >= SIGNAL_Z)}
    return out


def pick_scale(df: pd.DataFrame) -> str:
    """The default scale, by signal-to-noise: 'accuracy' only where both of its axes carry signal
    (`scale_signal`: some method, or some difference between methods, beyond SIGNAL_Z standard
    errors); otherwise the continuous proxies, which resolve far smaller changes. Accuracy is also
    the answer when it is all there is."""
    sig = scale_signal(df)
    acc, proxy = sig["accuracy"], sig["proxy"]
    if acc["present"] and (acc["signal"] or not proxy["present"]):
        return "accuracy"
    return "proxy" if proxy["present"] or not acc["present"] else "accuracy"


def scale_notes(df: pd.DataFrame, scale: str) -> list[str]:
    """Plain-language notes on which axes are noise, for the chosen scale and the one set aside."""
    sig = scale_signal(df)
    notes = []
    for name, s in sig.items():
        if not s["present"]:
            continue
        for ax, what in (("x", "target gain" if name == "accuracy" else "plasticity"),
                         ("y", "forgetting")):
            a = s[ax]
            if not a["z"] >= SIGNAL_Z:
                z = ("every target accuracy is 0 before and after" if a.get("floor") else "no SE known"
                     if a["z"] != a["z"] else f"the largest value or difference is {a['z']:.1f} SE")
                notes.append(f"{name} scale, {what} axis: within noise ({z}; max SE {a['max_se']:.3g} over "
                             f"{a['groups']} method group(s)) — {'its verdicts are noise' if name == scale else 'set aside'}.")
    if scale == "proxy" and sig["accuracy"]["present"] and not sig["accuracy"]["signal"]:
        notes.append("Default scale: proxy, because an accuracy axis does not clear 2 SE (signal-to-noise rule, "
                     "arena/results/scales.py); the accuracy scale stays one click away.")
    elif scale == "accuracy" and sig["accuracy"]["signal"]:
        notes.append("Default scale: accuracy — both of its axes clear 2 SE (signal-to-noise rule, arena/results/scales.py).")
    return notes
