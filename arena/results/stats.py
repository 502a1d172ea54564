"""Estimators and tests over runs and documents: pure functions (math, numpy; scipy for t tails).

Ratio estimator over sampling units i = 1..n, each contributing y_i out of k_i (k_i = 1: a mean):

    p  = Σ y_i / Σ k_i
    SE = sqrt( n/(n−1) · Σ (y_i − p·k_i)² ) / Σ k_i          (cluster-robust; Cochran 1977 §6)

With k_i = 1 this is s/√n (s the sample standard deviation). The evaluation scores benchmarks with
it (`arena.evaluation.stats`), documents being the units.

Paired difference of two measurements of the same units (d_i = b_i − a_i):

    Δ = mean d,   SE(Δ) = s_d / √n

Welch's t for two independent samples with unequal variances (v = s²/n per sample):

    t = (mean a − mean b) / sqrt(v_a + v_b)
    ν = (v_a + v_b)² / ( v_a²/(n_a − 1) + v_b²/(n_b − 1) )        (Welch–Satterthwaite)
    p = 2 · P(T_ν > |t|)

Percentile bootstrap interval of a statistic θ: resample the values with replacement B times,
θ*_1..θ*_B, and take the (1−level)/2 and (1+level)/2 quantiles of θ*.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

NAN = float("nan")


def ratio_mean_se(y: Sequence[float], k: Sequence[float] | None = None) -> tuple[float, float]:
    """(p, SE) of the ratio estimator Σy/Σk with the units as sampling units (see module doc)."""
    n = len(y)
    if k is None:
        k = [1.0] * n
    if n == 0:
        return NAN, NAN
    K = float(sum(k))
    if K == 0:
        return NAN, NAN
    p = float(sum(y)) / K
    if n < 2:
        return p, NAN
    ss = sum((yi - p * ki) ** 2 for yi, ki in zip(y, k))
    return p, math.sqrt(n / (n - 1) * ss) / K


def paired_delta(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, int]:
    """Paired mean difference b − a of per-unit values (e.g. per-prompt NLLs, per-seed scores):
    (mean d, s_d/√n, n)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    d = [y - x for x, y in zip(a, b)]
    m, se = ratio_mean_se(d)
    return m, se, len(d)


def _finite(values) -> np.ndarray:
    v = np.asarray(list(values), float)
    return v[~np.isnan(v)]


def t_pvalue(t: float, dof: float) -> float:
    """Two-sided p of Student's t with `dof` degrees of freedom: 2 · P(T_dof > |t|)."""
    if math.isinf(t):
        return 0.0
    from scipy import stats  # scipy.stats takes a while to import: only paid when a test is computed

    return float(2 * stats.t.sf(abs(t), dof))


def welch(a: Sequence[float], b: Sequence[float]) -> dict:
    """Welch's t-test of mean(a) − mean(b) (NaNs dropped; needs >= 2 values in each):
    {"diff", "se", "stat", "dof", "p"}. Equal to scipy.stats.ttest_ind(a, b, equal_var=False)."""
    a, b = _finite(a), _finite(b)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's t needs at least 2 values per sample, got {len(a)} and {len(b)}")
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1)) + (vb ** 2 / (len(b) - 1))) if (va + vb) > 0 else math.inf
    t = diff / se if se > 0 else (math.inf if diff else 0.0)
    return {"diff": diff, "se": se, "stat": t, "dof": dof, "p": t_pvalue(t, dof)}


def bootstrap_ci(values: Sequence[float], statistic: Callable[[np.ndarray], float] = np.mean, level: float = 0.95,
                 n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (lo, hi) of `statistic` (NaNs dropped; seeded, so repeatable).

    `statistic` takes an array and an `axis` keyword (np.mean, np.median, ...): the B resamples are
    scored in one call. Fewer than 2 values: (NaN, NaN).
    """
    v = _finite(values)
    if len(v) < 2:
        return NAN, NAN
    rng = np.random.default_rng(seed)
    boot = statistic(v[rng.integers(0, len(v), size=(n_boot, len(v)))], axis=1)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def seed_mean_se(values: Sequence[float], eval_se=math.nan) -> tuple[float, float, str]:
    """(mean, SE, kind) of one method's values over training seeds (NaNs dropped).

    The seeds are scored on the same documents, so averaging them removes training noise but not
    the documents' sampling noise, which every seed shares. With n >= 2 values

        SE = sqrt( s²/n + ē² )        s: the seeds' standard deviation; ē² = mean of the runs' eval SE²

    (ē from `eval_se`, one per value or one for all; without any, s/√n alone). ē² also holds the
    part of each run's evaluation noise that differs between seeds, which s²/n counts too, so the
    SE errs on the large side. With one value: that value and its eval SE (seed variance not
    measured). With none: NaNs."""
    vals = np.asarray(list(values), float)
    errs = np.broadcast_to(np.asarray(eval_se, float), vals.shape) if np.ndim(eval_se) == 0 else \
        np.asarray(list(eval_se), float)
    keep = ~np.isnan(vals)
    v, e = vals[keep], errs[keep]
    e = e[~np.isnan(e)]
    if len(v) >= 2:
        seed_var = float(v.var(ddof=1)) / len(v)
        if len(e):
            return float(v.mean()), math.sqrt(seed_var + float(np.mean(e ** 2))), f"seed SEM ⊕ eval SE (n={len(v)})"
        return float(v.mean()), math.sqrt(seed_var), f"seed SEM (n={len(v)})"
    if len(v) == 1:
        return float(v[0]), float(e[0]) if len(e) else math.nan, "eval SE (1 seed)"
    return NAN, NAN, ""


def mean_ci(values: Sequence[float], eval_se: float = math.nan, level: float = 0.95) -> tuple[float, float, str]:
    """Interval of a mean over seeds: mean ± t_{(1+level)/2, n−1} · s/√n with n >= 2 values (NaNs
    dropped); with one value, value ± 2·eval_se, which holds evaluation noise only. (lo, hi, kind)."""
    v = _finite(values)
    if len(v) >= 2:
        from scipy import stats

        h = float(stats.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
        return float(v.mean()) - h, float(v.mean()) + h, f"t over {len(v)} seeds"
    if len(v) == 1 and eval_se == eval_se:
        return float(v[0]) - 2 * eval_se, float(v[0]) + 2 * eval_se, "±2 eval SE (1 seed)"
    return NAN, NAN, ""


def compare_two(a, b, a_se: float = math.nan, b_se: float = math.nan) -> dict:
    """Is mean(a) − mean(b) more than noise? Welch's t over seeds when both have >= 2 seeds, else a
    z-score from the evaluation SEs, z = diff / hypot(a_se, b_se) (seed variance not measured).
    within_noise: p >= 0.05 (Welch) or |z| < 2."""
    a, b = _finite(a), _finite(b)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if len(a) >= 2 and len(b) >= 2:
        w = welch(a, b)
        return {"diff": w["diff"], "se": w["se"], "test": "welch", "stat": w["stat"], "dof": w["dof"], "p": w["p"],
                "within_noise": not (w["p"] < 0.05), "seeds": (len(a), len(b))}
    se = math.hypot(a_se if not math.isnan(a_se) else 0.0, b_se if not math.isnan(b_se) else 0.0)
    z = diff / se if se > 0 else (math.inf if diff else 0.0)
    return {"diff": diff, "se": se, "test": "eval-se", "stat": z, "p": math.nan,
            "within_noise": bool(abs(z) < 2) if not math.isnan(z) else True, "seeds": (len(a), len(b)),
            "note": "one seed: seed variance was not measured; only evaluation noise is accounted for"}
