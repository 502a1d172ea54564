"""The fidelity pieces of issue 11: the lr_scan sweep axis, the signal-to-noise default scale, the
matched-plasticity headline with seed intervals, per-group correlations with bootstrap intervals,
the best-trade-off-over-lr view, the per-benchmark and diagnostics views, titles from the sweep."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from arena.errors import ConfigError
from arena.reports.render import build, render
from arena.results.correlations import PAPER, correlation_ci, metric_vs_forgetting
from arena.results.load import load_results
from arena.results.lr_scan import lr_view, paper_forgetting, spearman_ci
from arena.results.matched import interpolation_curves, matched_plasticity
from arena.results.scales import axis_signal, pick_scale, scale_notes
from arena.results.stats import mean_ci
from arena.results.views import benchmark_view, diagnostics_view
from arena.sweeps.expand import expand
from arena.sweeps.load import sweep_config_from_dict
from dashboard.synthetic import PILOT, make_record, write_run, write_sweep


def _sweep(**kw) -> dict:
    d = {"name": "t", "model": "tiny", "targets": [{"name": "arith", "n_train": 256}],
         "methods": [{"name": "lora", "rank": 4, "lr": 1e-2}, "oft"], "seeds": [0, 1],
         "budget": {"steps": 3, "batch_size": 4, "seq_len": 64}, "train": {"precision": "fp32", "device": "cpu"},
         "eval": {"enabled": False}, "diagnostics": {"enabled": False},
         "interpolation": {"enabled": True}}
    d.update(kw)
    return d


# ------------------------------------------------------------------ lr_scan

def test_lr_scan_expands_each_method_around_its_own_lr():
    runs = expand(sweep_config_from_dict(_sweep(lr_scan={"factors": [0.25, 4], "seeds": [0]})))
    by = {(r.label, r.seed): r for r in runs}
    assert len(runs) == 2 * 2 + 2 * 2  # 2 methods x 2 seeds + 2 methods x 2 factors at seed 0
    assert by[("lora-lrx4", 0)].config["train"]["lr"] == pytest.approx(4e-2)
    assert by[("lora-lrx0.25", 0)].config["train"]["lr"] == pytest.approx(2.5e-3)
    # oft has no lr in the sweep: the scan multiplies the method's default, as the run would resolve it
    from arena.components import METHODS
    assert by[("oft-lrx4", 0)].config["train"]["lr"] == pytest.approx(4 * METHODS.get("oft").default_lr)
    assert ("lora-lrx4", 1) not in by
    scan = by[("lora-lrx4", 0)]
    assert scan.lr_factor == 4 and scan.lr_of == "lora" and "interpolation" not in scan.stages
    assert "interpolation" in by[("lora", 0)].stages
    assert scan.sweep_section()["lr_of"] == "lora" and scan.to_dict()["lr_factor"] == 4
    assert by[("lora", 0)].lr_factor is None and "lr_factor" not in by[("lora", 0)].to_dict()


def test_lr_scan_keeps_main_run_ids_and_can_interpolate():
    plain = {r.label: r.run_id for r in expand(sweep_config_from_dict(_sweep()))}
    scanned = expand(sweep_config_from_dict(_sweep(lr_scan={"factors": [2], "methods": ["oft"],
                                                            "interpolate": True})))
    assert {r.label: r.run_id for r in scanned if r.lr_factor is None} == plain
    assert {r.label for r in scanned if r.lr_factor} == {"oft-lrx2"}
    assert all("interpolation" in r.stages for r in scanned)


@pytest.mark.parametrize("scan, field", [({"factors": [1]}, "lr_scan.factors[0]"), ({"factors": [-2]}, "lr_scan.factors[0]"),
                                         ({"factors": [2, 2]}, "lr_scan.factors"), ({"factors": [2], "methods": ["dora"]},
                                                                                    "lr_scan.methods")])
def test_lr_scan_bad_input_names_the_field(scan, field):
    with pytest.raises(ConfigError) as e:
        sweep_config_from_dict(_sweep(lr_scan=scan))
    assert e.value.field == field


def test_lr_scan_label_clash_is_an_error():
    with pytest.raises(ConfigError) as e:
        sweep_config_from_dict(_sweep(methods=["lora", {"name": "lora", "label": "lora-lrx2", "rank": 4}],
                                      lr_scan={"factors": [2]}))
    assert e.value.field == "methods[1].label"


# ------------------------------------------------------------------ signal-to-noise scale

def _runs(gains, ses, forg, forg_se, **extra):
    rows = []
    for i, (g, s, f, fs) in enumerate(zip(gains, ses, forg, forg_se)):
        rows.append({"state": "done", "model": "m", "target": "arith", "objective": "sft", "label": f"m{i}",
                     "seed": 0, "target_gain": g, "target_gain_se": s, "forgetting": f, "forgetting_se": fs,
                     "target_acc": 0.3, "target_acc_base": 0.1, "plasticity_nll": 0.5, "plasticity_nll_se": 0.01,
                     "forgetting_nll": 0.05 + 0.01 * i, "forgetting_nll_se": 0.002, **extra})
    return pd.DataFrame(rows)


def test_accuracy_is_the_default_only_when_both_axes_clear_noise():
    clear = _runs([0.2, 0.3], [0.03, 0.03], [0.05, 0.01], [0.01, 0.01])
    assert pick_scale(clear) == "accuracy"
    assert any("both of its axes clear 2 SE" in n for n in scale_notes(clear, "accuracy"))
    noisy = _runs([0.2, 0.3], [0.03, 0.03], [0.01, -0.005], [0.02, 0.02])  # forgetting within 1 SE
    assert pick_scale(noisy) == "proxy"
    notes = " ".join(scale_notes(noisy, "proxy"))
    assert "accuracy scale, forgetting axis: within noise" in notes and "set aside" in notes
    # the old rule (accuracy unless at the floor) would have chosen accuracy here
    assert noisy["target_acc"].gt(0).all()


def test_axis_signal_uses_seed_spread_with_two_seeds():
    df = pd.concat([_runs([0.10], [0.001], [0.0], [0.01]), _runs([0.30], [0.001], [0.0], [0.01])])
    df["label"] = "same"
    df["seed"] = [0, 1]
    a = axis_signal(df, "target_gain", "target_gain_se")
    # mean 0.2, SEM = std([0.1, 0.3]) / sqrt(2) = 0.1 (⊕ the shared eval SE 0.001): z ≈ 2.0, not the
    # 200 the eval SEs alone would give
    assert a["z_value"] == pytest.approx(0.2 / math.hypot(0.1, 0.001)) and a["groups"] == 1
    # the other way round: seeds that agree do not hide the documents' noise they share
    df["target_gain"] = [0.20, 0.2002]
    df["target_gain_se"] = 0.05
    a = axis_signal(df, "target_gain", "target_gain_se")
    assert a["z_value"] == pytest.approx(0.2001 / math.hypot(0.0001, 0.05)) and a["z_value"] < 4.1


# ------------------------------------------------------------------ intervals and correlations

def test_mean_ci_is_a_t_interval_over_seeds():
    v = [0.1, 0.2, 0.4]
    lo, hi, kind = mean_ci(v)
    ref = stats.t.interval(0.95, 2, loc=np.mean(v), scale=stats.sem(v))
    assert (lo, hi) == pytest.approx(ref) and "3 seeds" in kind
    lo1, hi1, kind1 = mean_ci([0.3], eval_se=0.05)
    assert (lo1, hi1) == pytest.approx((0.2, 0.4)) and "1 seed" in kind1


def test_correlation_ci_matches_scipy_and_brackets_it():
    rng = np.random.default_rng(1)
    m = rng.normal(size=30)
    f = 0.6 * m + rng.normal(size=30)
    c = correlation_ci(m, f)
    assert c["pearson"] == pytest.approx(stats.pearsonr(m, f)[0])
    assert c["spearman"] == pytest.approx(stats.spearmanr(m, f)[0])
    assert c["pearson_lo"] < c["pearson"] < c["pearson_hi"] and c["spearman_lo"] < c["spearman"] < c["spearman_hi"]
    assert math.isnan(correlation_ci(m[:4], f[:4])["pearson_lo"])  # no interval below n = 5


def test_correlations_are_per_group_with_the_papers_values():
    df = pd.DataFrame({"state": "done", "model": "m", "objective": "sft",
                       "target": ["a"] * 6 + ["b"] * 6, "forgetting": list(range(6)) + list(range(6)),
                       "diag:procrustes_general": list(range(6)) + [5, 4, 3, 2, 1, 0]})
    out = metric_vs_forgetting(df, "forgetting").set_index("target")
    # pooled over both targets the correlation would be 0; within each group it is +1 and -1
    assert out.loc["a", "pearson"] == pytest.approx(1.0) and out.loc["b", "pearson"] == pytest.approx(-1.0)
    assert (out["n"] == 6).all() and (out["paper_pearson"] == PAPER["procrustes_general"][0]).all()


def test_spearman_ci_against_the_paper_ordering():
    ref = paper_forgetting(target="arith")
    assert set(ref) == {"Qwen2.5-7B Math", "Llama3.2-3B Math"}
    col = ref["Qwen2.5-7B Math"]
    assert col["pissa"] == pytest.approx(46.97 - 24.78) and col["vera"] < col["oft"] < col["lora"] < col["full"]
    same = {k: [v, v + 0.1, v - 0.1] for k, v in col.items()}
    r = spearman_ci(same, col)
    assert r["rho"] == pytest.approx(1.0) and r["n"] == 5 and r["with_seeds"] == 5 and r["lo"] <= 1.0
    rev = spearman_ci({k: [-v] for k, v in col.items()}, col)
    assert rev["rho"] == pytest.approx(-1.0) and math.isnan(rev["lo"])  # one seed each: no interval


# ------------------------------------------------------------------ views and the report

@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """Five methods x 3 seeds with paths, and an lr scan (x0.25, x4) of lora and oft at seed 0 whose
    profiles make oft's best lr the low one."""
    root = write_sweep(tmp_path_factory.mktemp("scan"), seeds=(0, 1, 2), sweep="cpu-study")
    for lab, f, prof in (("lora", 0.25, (0.2, 0.02)), ("lora", 4.0, (0.9, 0.3)),
                         ("oft", 0.25, (0.5, 0.01)), ("oft", 4.0, (0.95, 0.5))):
        method, p, fg, tg, fa, params, secs = PILOT[lab]
        rec = make_record(lab, 0, sweep="cpu-study", profile=(method, prof[0], prof[1], tg, fa, params, secs),
                          interpolation=False)
        rec["sweep"].update(label=f"{lab}-lrx{f:g}", lr_factor=f, lr_of=lab)
        rec["run_id"] = rec["sweep"]["run_id"] = f"{lab}-lrx{f:g}-math-sft-s0-0000000{int(f)}"
        rec["config"]["train"]["lr"] = 2e-4 * f
        write_run(root, rec)
    return root


def test_lr_view_picks_the_best_trade_off_per_method(scanned):
    data = build(scanned, scale="proxy")
    view = lr_view(data.leaderboard, load_results(scanned).df, "proxy")
    g = view["groups"][0]
    best = g["best"].set_index("method")
    assert set(best.index) >= {"lora", "oft"}
    t = g["table"]
    oft = t[t["method"] == "oft"].set_index("lr_factor")
    assert best.loc["oft", "best_factor"] == oft["forgetting_per_gain"].idxmin() == 0.25
    assert best.loc["oft", "lrs"] == 3
    assert any(a.startswith("oft:") and "x0.25" in a for a in g["answer"])
    assert set(g["orderings"]["paper column"]) == {"Llama3.2-3B Math", "Qwen2.5-7B Math"}


def test_report_headline_is_the_matched_verdict(scanned):
    md = render(scanned, fmt="md", scale="proxy")
    assert md.startswith("# Method-selection report — cpu-study")
    head = md.index("## Verdict at matched plasticity")
    assert head < md.index("## Recommendations (end points)") < md.index("## Leaderboard")
    assert "t over 3 seeds" in md and "## Learning rate" in md and "## Per benchmark" in md
    assert "## Diagnostics" in md and "paper_pearson" in md
    assert "Against the paper (Qwen2.5-7B Math, SFT forgetting): Spearman ρ" in md
    html = render(scanned, fmt="html", scale="proxy")
    assert "<title>Method-selection report — cpu-study</title>" in html
    assert html.index("Verdict at matched plasticity") < html.index("Pareto plot")


def test_verdict_counts_methods_not_lr_scan_labels(scanned):
    """Five methods all interpolated: no "k of the n method(s)" note, whatever the lr scan adds."""
    md = render(scanned, fmt="md", scale="proxy")
    assert "method(s) have a path in this group" not in md
    data = build(scanned, scale="proxy")
    assert data.leaderboard["label"].nunique() == 9  # 5 methods + 4 scan labels


def test_verdict_names_only_differences_beyond_noise(scanned):
    data = build(scanned, scale="proxy")
    curves = interpolation_curves(data.results)
    g = matched_plasticity(curves)["groups"][0]
    m = g["methods"].set_index("label")
    assert (m["seeds"] == 3).all() and (m["ci_lo"] <= m["forgetting_at_level"]).all()
    sentences = " ".join(s for sec in data.sections for kind, s in sec[1] if kind == "text")
    for _, p in g["pairs"].iterrows():
        lo, hi = (p["a"], p["b"]) if p["diff"] < 0 else (p["b"], p["a"])
        said = f"{lo} forgets less than {hi} at matched gain" in sentences
        assert said == (not p["within_noise"])


def test_benchmark_and_diagnostics_views(scanned):
    df = load_results(scanned).df
    b = benchmark_view(df)
    row = b[(b["label"] == "lora") & (b["benchmark"] == "ifeval")].iloc[0]
    runs = df[(df["label"] == "lora") & (df["state"] == "done")]
    assert row["seeds"] == 3 and row["n"] == 50
    assert row["delta"] == pytest.approx(runs["bench_delta:ifeval"].mean())
    assert row["se"] == pytest.approx(math.sqrt(runs["bench_delta:ifeval"].var(ddof=1) / 3
                                                + (runs["bench_se:ifeval"] ** 2).mean()))
    assert row["se_kind"] == "seed SEM ⊕ paired eval SE (n=3)"
    one = b[(b["label"] == "lora-lrx4") & (b["benchmark"] == "ifeval")].iloc[0]
    assert one["se_kind"] == "paired eval SE (1 seed)" and one["se"] == pytest.approx(0.015)
    d = diagnostics_view(df).set_index("label")
    assert d.loc["lora", "seeds"] == 3 and d.loc["lora", "procrustes_general_lo"] < d.loc["lora", "procrustes_general"]
    assert math.isnan(d.loc["lora-lrx4", "procrustes_general_lo"])


def test_methods_on_different_paths_are_matched_together(scanned):
    """OFT is read off its Cayley-generator path, the others off θ0 + α·ΔW: one group, not two."""
    curves = interpolation_curves(load_results(scanned))
    curves.loc[curves["method"] == "oft", "path"] = "generator"
    groups = matched_plasticity(curves)["groups"]
    assert len(groups) == 1 and groups[0]["path"] == "generator,weights"
    assert set(groups[0]["methods"]["label"]) == {"full", "lora", "pissa", "vera", "oft"}


def test_lr_best_trade_off_never_prefers_a_dominated_lr():
    """Below zero forgetting a signed ratio ranks backwards (−0.01/0.5 > −0.01/0.1): the lr that gains
    more and forgets no more must win, and one that forgets is ranked by forgetting per gain."""
    x, y = "plasticity_nll", "forgetting_nll"
    rows = [("oft", 1.0, 0.1, -0.01), ("oft", 4.0, 0.5, -0.01), ("oft", 0.25, 0.05, -0.02),
            ("lora", 1.0, 0.4, 0.04), ("lora", 4.0, 0.6, 0.12), ("lora", 0.25, 0.2, -0.001)]
    lb = pd.DataFrame([{"model": "m", "target": "arith", "objective": "sft", "lr_of": m, "lr_factor": f,
                        "label": m if f == 1 else f"{m}-lrx{f:g}", "lr": 1e-4 * f, "seeds": 1,
                        x: g, f"{x}_err": 0.01, y: fg, f"{y}_err": 0.005} for m, f, g, fg in rows])
    runs = lb.assign(state="done", method=lb["lr_of"])
    g = lr_view(lb, runs, "proxy")["groups"][0]
    best = g["best"].set_index("method")
    assert best.loc["oft", "best_factor"] == 4.0 and best.loc["oft", "best_ratio"] == 0.0
    assert best.loc["lora", "best_factor"] == 0.25  # no forgetting at x0.25 beats 0.1 per unit at its own lr
    assert best.loc["lora", "own_ratio"] == pytest.approx(0.1)
    assert any(a.startswith("oft:") and "gains without forgetting" in a and "x4" in a for a in g["answer"])
    # the change of forgetting against the own lr, with its SE: beyond noise for lora, not for oft
    assert best.loc["lora", "forgetting_change"] == pytest.approx(-0.041)
    assert best.loc["lora", "forgetting_change_se"] == pytest.approx(math.hypot(0.005, 0.005))
    assert best.loc["lora", "change_beyond_noise"] and not best.loc["oft", "change_beyond_noise"]
    assert any(a.startswith("lora:") and a.endswith("(SE): beyond noise.") for a in g["answer"])
    assert any(a.startswith("oft:") and "within noise, so the scan does not show an lr effect" in a for a in g["answer"])


def test_a_benchmark_at_the_floor_is_named_in_the_report():
    from arena.reports.sections import benchmark_section

    view = pd.DataFrame([{"label": lab, "benchmark": b, "n": 200, "base": base, "tuned": tuned}
                         for lab in ("lora", "oft") for b, base, tuned in
                         (("nq_open", 0.0, 0.0), ("ifeval", 0.25, 0.26), ("arith", 0.02, 0.0))])
    texts = [t for kind, t in benchmark_section(view)[0][1] if kind == "text"]
    assert [t for t in texts if "at the floor" in t] == [
        "nq_open is at the floor: the base and every tuned run score 0 on its 200 documents, so it carries no "
        "forgetting signal here, and an axis that averages it in is diluted by its share."]
