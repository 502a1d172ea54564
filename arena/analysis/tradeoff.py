"""The two marked α of a target-vs-general curve (pure functions of the scored points).

Each point is {"alpha", "general": {"value", "se", ...}, "target": {...}}; `kind` says how the
values are oriented: "nll" (lower is better) or "accuracy" (higher is better).
(a) "constrained": the best target score among the α whose general score is no worse than the base's
    by more than δ (δ = 0.01 nats for the NLL proxies; 1 standard error of the base general score
    for accuracy-like scores). α = 0 always qualifies, so (a) always exists.
(b) "knee": the α farthest from the chord between α = 0 and α = 1 in the target-general plane
    (each axis min-max normalised over the curve, both oriented higher-is-better), on the side of
    the ideal corner (best target, best general); none when every point lies on or below the chord.
"""

from __future__ import annotations

import math

from arena.analysis.settings import INTERP_SUITES
from arena.errors import ArenaError

NLL_DELTA = 0.01  # nats: the general-NLL tolerance of rule (a) for the proxy scores


def _oriented(point: dict, axis: str, kind: str) -> float:
    v = point[axis]["value"]
    return -v if kind == "nll" else v


def tradeoff(points: list[dict], kind: str = "nll", delta: float | None = None) -> dict:
    """The two marked α of a curve (rules (a) and (b) in the module docstring); {} without both axes."""
    if not points or any(a not in p for p in points for a in INTERP_SUITES):
        return {}
    by_alpha = {p["alpha"]: p for p in points}
    base = by_alpha.get(0.0)
    if base is None:
        raise ArenaError("trade-off rules need the α = 0 point")
    if delta is None:
        delta = NLL_DELTA if kind == "nll" else float(base["general"].get("se") or 0.0)
    g0 = _oriented(base, "general", kind)
    ok = [p for p in points if _oriented(p, "general", kind) >= g0 - delta - 1e-12]
    best = max(ok, key=lambda p: (_oriented(p, "target", kind), -p["alpha"]))
    rule = (f"min target NLL subject to general NLL <= base + {delta:g} nats" if kind == "nll"
            else f"max target subject to general >= base - {delta:g} (1 SE of the base general score)")
    out = {"constrained": {"alpha": best["alpha"], "delta": delta, "rule": rule}}
    out["knee"] = _knee(points, by_alpha, kind)
    return out


def _knee(points, by_alpha, kind) -> dict:
    rule = "max distance from the alpha=0 -> alpha=1 chord, normalised target-general plane, ideal side"
    if 1.0 not in by_alpha:
        return {"alpha": None, "rule": rule, "reason": "no alpha = 1 point"}
    xs = [_oriented(p, "target", kind) for p in points]
    ys = [_oriented(p, "general", kind) for p in points]

    def norm(v, vs):
        lo, hi = min(vs), max(vs)
        return (v - lo) / (hi - lo) if hi > lo else 0.0

    pts = [(norm(x, xs), norm(y, ys)) for x, y in zip(xs, ys)]
    i0 = next(i for i, p in enumerate(points) if p["alpha"] == 0.0)
    i1 = next(i for i, p in enumerate(points) if p["alpha"] == 1.0)
    (x0, y0), (x1, y1) = pts[i0], pts[i1]
    dx, dy = x1 - x0, y1 - y0
    length = math.hypot(dx, dy)
    if length == 0:
        return {"alpha": None, "rule": rule, "reason": "alpha = 0 and alpha = 1 score the same"}
    cross = lambda x, y: (dx * (y - y0) - dy * (x - x0)) / length
    side = 1.0 if cross(1.0, 1.0) >= 0 else -1.0
    dists = [side * cross(x, y) for x, y in pts]
    k = max(range(len(points)), key=lambda i: (dists[i], -points[i]["alpha"]))
    if dists[k] <= 1e-12:
        return {"alpha": None, "rule": rule, "reason": "no point lies above the chord"}
    return {"alpha": points[k]["alpha"], "distance": dists[k], "rule": rule}
