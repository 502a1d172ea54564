"""The two scales runs are compared on, and which one carries signal.

Two scales, because a 135M model's accuracies often sit at the floor:

    accuracy  x = target gain  (tuned − base target-axis accuracy)      y = forgetting (base − tuned general)
    proxy     x = plasticity   (base − tuned held-out target NLL, nats)  y = forgetting (general ΔCE, nats)

On both, "better" is more x and less y. The column names are those of `arena.results.flatten`.
"""

from __future__ import annotations

import pandas as pd

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


def pick_scale(df: pd.DataFrame) -> str:
    """'accuracy' unless the target accuracies sit at the floor (every run 0 before and after) or are
    missing, in which case the continuous proxies are the axes that carry signal."""
    acc = has_scale(df, "accuracy")
    floor = acc and "target_acc" in df and bool(((df["target_acc"].fillna(0) == 0)
                                                 & (df["target_acc_base"].fillna(0) == 0)).all())
    if acc and not floor:
        return "accuracy"
    return "proxy" if has_scale(df, "proxy") or not acc else "accuracy"
