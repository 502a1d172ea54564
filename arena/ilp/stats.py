"""Intervals for the ILP shares: a Wilson score interval for a binomial proportion.

Wilson (not the normal approximation) because unlearned shares sit near 0 and cause shares are
taken over a few dozen unlearned samples, where p ± 1.96·sqrt(p(1−p)/n) leaves [0, 1] or collapses
to a point at k = 0.
"""

from __future__ import annotations

import math


def wilson(k: int, n: int, z: float = 1.959964) -> list[float] | None:
    """95% Wilson interval for k successes in n trials:

        centre = (p + z²/2n) / (1 + z²/n),  half = z·sqrt(p(1−p)/n + z²/4n²) / (1 + z²/n),  p = k/n.
    None when n = 0.
    """
    if n <= 0:
        return None
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return [round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)]


def jsd_bits(p: list[float], q: list[float]) -> float:
    """Jensen–Shannon divergence in bits (in [0, 1]): JSD = ½KL(p‖m) + ½KL(q‖m), m = ½(p+q)."""
    out = 0.0
    for a, b in zip(p, q):
        m = 0.5 * (a + b)
        if a > 0:
            out += 0.5 * a * math.log2(a / m)
        if b > 0:
            out += 0.5 * b * math.log2(b / m)
    return max(0.0, out)
