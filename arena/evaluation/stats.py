"""Scores, standard errors and the two axes, as pure functions over per-document results.

The per-benchmark ratio estimator (first formula below) is `arena.results.stats.ratio_mean_se`,
shared with the results library; this module builds the averages, paired deltas and axes on it.

Every benchmark score is a ratio estimator over documents i = 1..n: each document contributes y_i
successes out of k_i units (k_i = 1 for ordinary accuracy; for IFEval's instruction-level accuracy
y_i is the number of instructions of prompt i that were followed and k_i the number it has).

    p  = Σ y_i / Σ k_i
    SE = sqrt( n/(n-1) · Σ (y_i − p·k_i)² ) / Σ k_i          (cluster-robust; documents are the
                                                              sampling units, Cochran 1977 §6)

With k_i = 1 this is the usual s/√n (s the sample standard deviation); for 0/1 outcomes it equals
sqrt(p(1−p)/(n−1)), the binomial standard error with the n−1 correction. It is 0 when every
document scores the same (e.g. accuracy 0 at the floor): a small-n SE says nothing there, so the
tables always print n next to it.

Averages of independent estimates (BBH over its subtasks, an axis over its benchmarks):

    m  = (1/T) Σ_t p_t ,   SE(m) = sqrt( Σ_t SE_t² ) / T

Differences between two models evaluated on the same documents are paired (d_i = y_i' − y_i, same
k_i), which removes the between-document variance:

    Δ  = Σ d_i / Σ k_i ,   SE(Δ) = sqrt( n/(n−1) · Σ (d_i − Δ·k_i)² ) / Σ k_i

and fall back to the independent form sqrt(SE_a² + SE_b²) when the documents differ.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from arena.results.stats import ratio_mean_se

NAN = float("nan")


def average(parts: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """Unweighted mean of independent estimates (p_t, SE_t): (mean, sqrt(Σ SE_t²)/T)."""
    parts = list(parts)
    if not parts:
        return NAN, NAN
    T = len(parts)
    return sum(p for p, _ in parts) / T, math.sqrt(sum(se * se for _, se in parts)) / T


def independent_delta(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """b − a with SE sqrt(SE_a² + SE_b²) (two independent samples)."""
    return b[0] - a[0], math.sqrt(a[1] ** 2 + b[1] ** 2)


def units_delta(base: dict, tuned: dict) -> tuple[float, float, int] | None:
    """Paired (Δ, SE, n) of tuned − base from per-document units, or None if documents differ.

    `units` dicts hold parallel lists doc_ids, y and optionally k (all ones when absent).
    """
    if not base or not tuned or base.get("doc_ids") != tuned.get("doc_ids"):
        return None
    kb = base.get("k") or [1] * len(base["y"])
    kt = tuned.get("k") or [1] * len(tuned["y"])
    if list(kb) != list(kt):
        return None
    d = [t - b for b, t in zip(base["y"], tuned["y"])]
    delta, se = ratio_mean_se(d, kb)
    return delta, se, len(d)


def axis(scores: dict[str, dict], members: Sequence[str]) -> dict:
    """An axis = unweighted mean of its benchmarks' primary scores, with SE sqrt(Σ SE²)/B.

    Benchmarks missing from `scores` are listed and the axis is marked partial, never silently
    averaged over fewer members as if complete.
    """
    present = [m for m in members if m in scores and scores[m].get("score") is not None]
    score, se = average((scores[m]["score"], scores[m]["se"]) for m in present)
    return {"score": score, "se": se, "benchmarks": present, "missing": [m for m in members if m not in present],
            "complete": len(present) == len(members)}


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def fill_small_se(parts: list[dict], difference: bool = False) -> list[dict]:
    """Subtask estimates with a usable SE: a subtask with n < 2 has no sample variance, and one whose
    n_t documents all scored the same has a sample variance of 0 that says nothing at small n (at
    limit 54, 2 documents a subtask, most BBH subtasks are 0/2 or 2/2, and their SE 0 made the BBH SE
    far too small). Both get the SE of n_t draws from the pooled per-document distribution,
    sqrt(v̄/n_t):

        accuracies (0/1):            v̄ = p̄(1 − p̄),          p̄ = Σ n_t·p_t / Σ n_t
        paired differences (−1..1):  v̄ = max(0, m̄₂ − d̄²),   d̄ = Σ n_t·d_t / Σ n_t,  m̄₂ = Σ n_t·d_t² / Σ n_t

    (m̄₂ is exact for single-document subtasks and a lower bound otherwise). Used for BBH at small
    limits (limit 27 gives one document per subtask). A difference may be negative, so the
    binomial form would take the root of a negative number there.
    """
    total = sum(p["n"] for p in parts)
    pooled = sum(p["score"] * p["n"] for p in parts) / total if total else NAN
    if difference:
        m2 = sum(p["score"] ** 2 * p["n"] for p in parts) / total if total else NAN
        var = max(0.0, m2 - pooled * pooled) if total else NAN
    else:
        var = max(0.0, pooled * (1 - pooled)) if total else NAN
    out = []
    for p in parts:
        se = p["se"]
        if p["n"] < 2 or se is None or math.isnan(se) or se == 0:
            se = math.sqrt(var / p["n"]) if p["n"] and not math.isnan(var) else NAN
        out.append({**p, "se": se})
    return out
