"""arena.results.stats against known values: Welch's t against scipy, paired SEs by hand, the
bootstrap interval's coverage on seeded samples, and the two-method comparison."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from arena.results import stats
from arena.results.stats import bootstrap_ci, compare_two, paired_delta, ratio_mean_se, t_pvalue, welch


@pytest.mark.parametrize("a,b", [([1.0, 1.2, 0.9, 1.1], [0.5, 0.7, 0.4]),
                                 ([0.31, 0.29, 0.35, 0.30, 0.33], [0.30, 0.36]),
                                 ([2.0, 2.0, 2.1], [1.0, 3.0, 2.5, 0.2])])
def test_welch_matches_scipy(a, b):
    ref = sps.ttest_ind(a, b, equal_var=False)
    w = welch(a, b)
    assert w["stat"] == pytest.approx(ref.statistic) and w["p"] == pytest.approx(ref.pvalue)
    assert w["diff"] == pytest.approx(np.mean(a) - np.mean(b))
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    assert w["se"] == pytest.approx(math.sqrt(va + vb))
    assert w["dof"] == pytest.approx((va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)))


def test_welch_edge_cases():
    w = welch([1.0, 1.0, float("nan")], [1.0, 1.0])  # NaN dropped; no variance, no difference
    assert w["stat"] == 0.0 and w["dof"] == math.inf and w["p"] == pytest.approx(1.0)
    assert welch([2.0, 2.0], [1.0, 1.0])["p"] == 0.0  # no variance but a difference: t = inf
    with pytest.raises(ValueError, match="at least 2"):
        welch([1.0], [1.0, 2.0])


def test_t_pvalue_two_sided():
    assert t_pvalue(2.0, 10) == pytest.approx(2 * sps.t.sf(2.0, 10))
    assert t_pvalue(-2.0, 10) == t_pvalue(2.0, 10) and t_pvalue(math.inf, 3) == 0.0


def test_ratio_mean_se_and_paired_delta_by_hand():
    p, se = ratio_mean_se([1, 0, 1, 1])  # 0/1 outcomes: sqrt(p(1-p)/(n-1))
    assert p == 0.75 and se == pytest.approx(math.sqrt(0.75 * 0.25 / 3))
    p, se = ratio_mean_se([2, 0], [2, 1])  # instruction-level: clustered by prompt
    assert p == pytest.approx(2 / 3) and se == pytest.approx(math.sqrt(2 * ((2 - 4 / 3) ** 2 + (2 / 3) ** 2)) / 3)
    d, se, n = paired_delta([1.0, 2.0, 3.0, 4.0], [1.5, 2.1, 3.9, 4.2])  # d = .5 .1 .9 .2
    diffs = np.array([0.5, 0.1, 0.9, 0.2])
    assert n == 4 and d == pytest.approx(diffs.mean()) and se == pytest.approx(diffs.std(ddof=1) / 2)
    # pairing removes the between-unit variance: the unpaired SE of the same numbers is far larger
    assert se < math.hypot(np.std([1, 2, 3, 4], ddof=1) / 2, np.std([1.5, 2.1, 3.9, 4.2], ddof=1) / 2) / 5
    with pytest.raises(ValueError, match="equal lengths"):
        paired_delta([1.0], [1.0, 2.0])


def test_bootstrap_ci_covers_the_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    trials, hits = 200, 0
    for i in range(trials):
        lo, hi = bootstrap_ci(rng.normal(0.0, 1.0, size=40), n_boot=1000, seed=i)
        hits += lo <= 0.0 <= hi
    assert 0.88 <= hits / trials <= 0.99  # percentile bootstrap: slightly under nominal at n = 40


def test_bootstrap_ci_is_seeded_and_shrinks_with_n():
    x = np.random.default_rng(0).normal(size=200)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    lo, hi = bootstrap_ci(x, level=0.9)
    lo_s, hi_s = bootstrap_ci(x[:20], level=0.9)
    assert lo < x.mean() < hi and hi - lo < hi_s - lo_s
    lo_m, hi_m = bootstrap_ci(x, statistic=np.median)
    assert lo_m < np.median(x) < hi_m
    assert all(math.isnan(v) for v in bootstrap_ci([1.0]))


def test_compare_two_welch_over_seeds_else_eval_se():
    a, b = pd.Series([1.0, 1.2, 0.9, 1.1]), pd.Series([0.5, 0.7, 0.4])
    r = compare_two(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert r["test"] == "welch" and r["stat"] == pytest.approx(ref.statistic) and r["p"] == pytest.approx(ref.pvalue)
    assert not r["within_noise"] and r["seeds"] == (4, 3)
    one = compare_two(pd.Series([0.5]), pd.Series([0.45]), 0.02, 0.02)
    assert one["test"] == "eval-se" and one["within_noise"] and "not measured" in one["note"]
    assert one["stat"] == pytest.approx(0.05 / math.hypot(0.02, 0.02))
    far = compare_two([0.5], [0.3], 0.02, math.nan)  # a missing SE counts as 0
    assert far["se"] == pytest.approx(0.02) and not far["within_noise"]


def test_seed_mean_se_adds_the_shared_eval_se_to_the_seed_spread():
    """Seeds scored on the same documents share the documents' noise: SE² = s²/n + mean(eval SE²)."""
    m, se, kind = stats.seed_mean_se([0.1, 0.3, float("nan"), 0.2], eval_se=[0.05, 0.05, 0.9, 0.05])
    assert (m, kind) == (pytest.approx(0.2), "seed SEM ⊕ eval SE (n=3)")
    assert se == pytest.approx(math.sqrt(0.01 / 3 + 0.05 ** 2))  # s = 0.1; the NaN run's SE is dropped with it
    m, se, kind = stats.seed_mean_se([0.1, 0.3, 0.2])  # no eval SE known: the seed SEM alone
    assert se == pytest.approx(0.1 / math.sqrt(3)) and kind == "seed SEM (n=3)"
    assert stats.seed_mean_se([0.4], eval_se=0.05) == (0.4, 0.05, "eval SE (1 seed)")
    assert stats.seed_mean_se([0.4, 0.4], eval_se=0.05)[1] == pytest.approx(0.05)  # agreeing seeds keep the eval SE
    m, se, kind = stats.seed_mean_se([float("nan")])
    assert math.isnan(m) and math.isnan(se) and kind == ""
