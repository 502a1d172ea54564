"""Learning-rate schedules as pure functions of the step."""

from __future__ import annotations

import math


def lr_factor(step: int, total: int, warmup: int, kind: str = "cosine", min_ratio: float = 0.0) -> float:
    """Multiplier of the peak LR for optimizer step `step` (0-based).

    warm-up:  f = (step + 1) / warmup                          for step < warmup
    cosine:   f = r + (1 − r) · ½ (1 + cos(π · p)),  p = (step − warmup) / max(1, total − warmup)
    linear:   f = r + (1 − r) · (1 − p)
    constant: f = 1
    with r = min_ratio, so the last step of a cosine run sits just above r.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    if kind == "linear":
        return min_ratio + (1 - min_ratio) * (1 - p)
    raise ValueError(f"unknown schedule {kind!r}")
