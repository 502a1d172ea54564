"""Scores, SEs, axes and comparisons: expected values derived by hand in each test's comment."""

from __future__ import annotations

import math

import pytest

from arena.evaluation import stats
from arena.evaluation.api import compare
from arena.results.stats import ratio_mean_se


def test_ratio_mean_se_plain_accuracy_is_binomial_with_n_minus_1():
    # y = 1,0,1,1: p = 3/4; Σ(y−p)² = 3·(1/4)² + (3/4)² = 3/4; SE = sqrt(4/3 · 3/4)/4 = 1/4
    # and sqrt(p(1−p)/(n−1)) = sqrt((3/16)/3) = 1/4.
    p, se = ratio_mean_se([1, 0, 1, 1])
    assert p == pytest.approx(0.75)
    assert se == pytest.approx(0.25)
    assert se == pytest.approx(math.sqrt(0.75 * 0.25 / 3))


def test_ratio_mean_se_clusters_instruction_level_by_prompt():
    # prompt 1: 2 of 2 instructions followed, prompt 2: 0 of 1 -> p = 2/3;
    # residuals y − p·k = 2 − 4/3 = 2/3 and 0 − 2/3; Σ² = 8/9; SE = sqrt(2 · 8/9) / 3 = 4/9.
    p, se = ratio_mean_se([2, 0], [2, 1])
    assert p == pytest.approx(2 / 3)
    assert se == pytest.approx(4 / 9)


def test_ratio_mean_se_edge_cases():
    assert all(math.isnan(x) for x in ratio_mean_se([]))
    p, se = ratio_mean_se([1])
    assert p == 1 and math.isnan(se)
    assert ratio_mean_se([0, 0, 0]) == (0.0, 0.0)


def test_average_of_independent_estimates():
    # (0.5 ± 0.3, 0.1 ± 0.4): mean 0.3, SE sqrt(0.09 + 0.16)/2 = 0.25
    m, se = stats.average([(0.5, 0.3), (0.1, 0.4)])
    assert m == pytest.approx(0.3) and se == pytest.approx(0.25)


def test_paired_delta_uses_per_document_differences():
    # d = (0, 1, −1): Δ = 0; SE = sqrt(3/2 · 2)/3 = sqrt(3)/3
    base = {"doc_ids": [1, 4, 7], "y": [1, 0, 1]}
    tuned = {"doc_ids": [1, 4, 7], "y": [1, 1, 0]}
    d, se, n = stats.units_delta(base, tuned)
    assert (d, n) == (0.0, 3)
    assert se == pytest.approx(math.sqrt(3) / 3)
    # identical outcomes: the paired SE is 0 while the independent one is not
    same = stats.units_delta(base, base)
    assert same[:2] == (0.0, 0.0)
    assert stats.units_delta(base, {"doc_ids": [1, 4, 8], "y": [1, 1, 0]}) is None


def test_independent_delta():
    d, se = stats.independent_delta((0.2, 0.03), (0.5, 0.04))
    assert d == pytest.approx(0.3) and se == pytest.approx(0.05)


def test_fill_small_se_uses_pooled_binomial_for_single_documents():
    # pooled p = (1·1 + 0·1 + 0.5·2)/4 = 0.5; n=1 subtasks get sqrt(0.25/1) = 0.5; n=2 keeps its SE
    parts = stats.fill_small_se([{"score": 1.0, "se": float("nan"), "n": 1}, {"score": 0.0, "se": float("nan"), "n": 1},
                                 {"score": 0.5, "se": 0.5, "n": 2}])
    assert [p["se"] for p in parts] == pytest.approx([0.5, 0.5, 0.5])


def test_fill_small_se_replaces_the_zero_se_of_zero_variance_subtasks():
    # 0/2 and 2/2 subtasks have sample SE 0; pooled p = (0·2 + 1·2 + 0.5·4)/8 = 0.5, so they get
    # sqrt(0.25/2); a subtask with a real SE keeps it
    parts = stats.fill_small_se([{"score": 0.0, "se": 0.0, "n": 2}, {"score": 1.0, "se": 0.0, "n": 2},
                                 {"score": 0.5, "se": 0.29, "n": 4}])
    assert [p["se"] for p in parts] == pytest.approx([math.sqrt(0.125), math.sqrt(0.125), 0.29])
    # the same for paired differences: d = 0 on both documents of a subtask is no evidence of SE 0
    d = stats.fill_small_se([{"score": 0.0, "se": 0.0, "n": 2}, {"score": 1.0, "se": 0.0, "n": 2}], difference=True)
    assert d[0]["se"] == pytest.approx(math.sqrt(0.25 / 2))


def test_axis_marks_missing_members():
    scores = {"ifeval": {"score": 0.2, "se": 0.03}, "nq_open": {"score": 0.1, "se": 0.04}}
    a = stats.axis(scores, ["ifeval", "bbh", "nq_open"])
    assert a["score"] == pytest.approx(0.15) and a["se"] == pytest.approx(0.025)
    assert a["missing"] == ["bbh"] and not a["complete"]


def _res(ifeval_y, nq_y, arith_y, bbh):
    def task(y):
        p, se = ratio_mean_se(y)
        return {"score": p, "se": se, "n": len(y), "units": {"doc_ids": list(range(len(y))), "y": y}}

    subs = {name: task(y) for name, y in bbh.items()}
    bp, bse = stats.average((s["score"], s["se"]) for s in subs.values())
    tasks = {"ifeval": task(ifeval_y), "nq_open": task(nq_y), "arith": task(arith_y),
             "bbh": {"score": bp, "se": bse, "n": 4, "subtasks": subs}}
    plan = {"general": ["ifeval", "bbh", "nq_open"], "target": ["arith"]}
    return {"tasks": tasks, "axes": {a: stats.axis(tasks, m) for a, m in plan.items()}}


def test_compare_gain_forgetting_and_bbh_macro_delta():
    base = _res([1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], {"a": [1, 0], "b": [1, 1]})
    tuned = _res([1, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], {"a": [0, 0], "b": [1, 1]})
    c = compare(base, tuned)
    # ifeval 0.5 -> 0.25; bbh (0.5+1)/2 = 0.75 -> (0+1)/2 = 0.5; nq unchanged; arith 0 -> 0.5
    assert c["benchmarks"]["ifeval"]["delta"] == pytest.approx(-0.25)
    assert c["benchmarks"]["bbh"]["delta"] == pytest.approx(-0.25)
    assert c["benchmarks"]["nq_open"]["delta"] == 0
    assert all(b["paired"] for b in c["benchmarks"].values())
    # general Δ = (−0.25 − 0.25 + 0)/3; forgetting is its negative; target gain = arith Δ
    assert c["forgetting"]["value"] == pytest.approx(0.5 / 3)
    assert c["target_gain"]["value"] == pytest.approx(0.5)
    # arith: d = (1,1,0,0): SE = sqrt(4/3 · 4 · 1/4)/4 = sqrt(4/3)/4
    assert c["benchmarks"]["arith"]["se"] == pytest.approx(math.sqrt(4 / 3) / 4)


def test_allocate_is_proportional_with_every_label_present():
    from arena.evaluation.subsets import allocate

    sizes = {"yes": 276, "no": 169, "maybe": 55}
    # 50: 27.6, 16.9, 5.5 -> 27, 16, 5; remainders .9 (no), .6 (yes) -> 28, 17, 5
    assert allocate(sizes, 50) == {"yes": 28, "no": 17, "maybe": 5}
    # 3: 1.66, 1.01, 0.33 -> 1, 1, 0 -> maybe raised to 1 (every label present) -> 1, 1, 1
    assert allocate(sizes, 3) == {"yes": 1, "no": 1, "maybe": 1}
    # 10: 5.52, 3.38, 1.1 -> 5, 3, 1 + .52 (yes) -> 6, 3, 1
    assert allocate(sizes, 10) == {"yes": 6, "no": 3, "maybe": 1}
    # 2 < 3 labels: proportional only: 1.10, 0.68, 0.22 -> 1, 0, 0 + .68 (no) -> 1, 1, 0
    assert allocate(sizes, 2) == {"yes": 1, "no": 1, "maybe": 0}
    for n in range(1, 60):
        q = allocate(sizes, n)
        assert sum(q.values()) == n and all(q[k] <= sizes[k] for k in q)


def test_fill_small_se_for_paired_differences_with_negative_mean():
    """BBH deltas at one document per subtask: d = [-1, -1, 0, 1] → d̄ = −1/4, m̄₂ = 3/4,
    v̄ = 3/4 − 1/16 = 11/16, SE_t = sqrt(11/16) for every single-document subtask. The binomial form
    p̄(1 − p̄) is negative here (the quickstart sweep crashed on it with a math domain error)."""
    parts = [{"score": d, "se": float("nan"), "n": 1} for d in (-1.0, -1.0, 0.0, 1.0)]
    out = stats.fill_small_se(parts, difference=True)
    for p in out:
        assert p["se"] == pytest.approx(math.sqrt(11 / 16))
    # a subtask with its own SE keeps it
    kept = stats.fill_small_se([{"score": -0.5, "se": 0.2, "n": 4}, {"score": 0.0, "se": float("nan"), "n": 1}],
                               difference=True)
    assert kept[0]["se"] == 0.2
    # d̄ = −0.4, m̄₂ = 1/5 → v̄ = max(0, 0.2 − 0.16) = 0.04 → SE = 0.2
    assert kept[1]["se"] == pytest.approx(0.2)
