"""The results library (arena.results): loading (incl. corrupt/failed records), filters, Pareto,
leaderboard, matched plasticity, correlations, detail tables, exports — expected values derived by
hand — and that none of it imports torch, transformers, peft or lm-eval."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from arena.results.exports import export
from arena.results.filters import filter_runs, options, seed_values
from arena.results.flatten import run_state
from arena.results.leaderboard import leaderboard
from arena.results.load import load_results, train_log
from arena.results.matched import interpolation_curves, matched_plasticity, value_at_gain
from arena.results.pareto import pareto_front, pareto_mask
from arena.results.run_record import RunRecord
from arena.results.scales import pick_scale
from arena.results.tables import MODULE_COLUMNS, benchmark_table, metric_correlations, module_table
from dashboard.synthetic import make_record, write_run, write_sweep


@pytest.fixture(scope="module")
def sweep3(tmp_path_factory):
    return write_sweep(tmp_path_factory.mktemp("syn3"), seeds=(0, 1, 2), failed=True, corrupt=True)


def test_load_counts_states_and_skips_corrupt(sweep3):
    res = load_results(sweep3)
    assert len(res.df) == 16  # 5 methods x 3 seeds + 1 failed; the corrupt one is skipped
    assert (res.df["state"] == "done").sum() == 15
    failed = res.df[res.df["state"] == "failed"].iloc[0]
    assert failed["label"] == "dora" and "NaN" in failed["error"]
    assert len(res.warnings) == 1 and "boft" in res.warnings[0] and "unreadable" in res.warnings[0]
    # the columns come from the real record schema
    row = res.df[(res.df["label"] == "vera") & (res.df["seed"] == 0)].iloc[0]
    rec = res.records[row["key"]]
    assert row["target_gain"] == rec.eval["compare"]["target_gain"]["value"]
    assert row["forgetting_nll"] == rec.eval["compare"]["proxies"]["general_nll"]["delta"]
    assert row["plasticity_nll"] == -rec.eval["compare"]["proxies"]["target_nll"]["delta"]
    assert row["trainable_params"] == 282_624 and row["diag:cka_general"] < 1


def test_empty_and_missing_folders(tmp_path):
    assert len(load_results(tmp_path).df) == 0
    res = load_results(tmp_path / "nope")
    assert len(res.df) == 0 and "no such folder" in res.warnings[0]
    assert len(leaderboard(res.df)) == 0


def test_state_of_sweep_records():
    rec = RunRecord.from_dict(make_record("lora"))
    assert run_state(rec) == "done"
    rec.sweep["status"] = "partial"
    assert run_state(rec) == "incomplete"  # trained, stages left: not a result yet
    assert run_state(RunRecord(status="failed", retryable=True)) == "interrupted"
    assert run_state(RunRecord(status="failed")) == "failed"
    assert run_state(RunRecord(status="done")) == "done"  # a hand-made run (no sweep section)
    assert run_state(RunRecord(status="running")) == "running"


def test_pareto_mask_by_hand():
    # maximise both: (3,1) and (1,3) and (2,2.5) are non-dominated; (1,1) and (2,2) are dominated;
    # a duplicate of a front point stays on the front; NaN never is.
    x = [3, 1, 2, 1, 2, 2, np.nan]
    y = [1, 3, 2.5, 1, 2, 2.5, 5]
    assert pareto_mask(x, y).tolist() == [True, True, True, False, False, True, False]


def test_pareto_front_maximises_gain_minimises_forgetting():
    df = pd.DataFrame({"model": "m", "target": "t", "objective": "o", "label": list("abcd"),
                       "target_gain": [0.5, 0.4, 0.6, 0.3], "forgetting": [0.1, 0.05, 0.3, 0.2]})
    assert pareto_front(df, "accuracy").tolist() == [True, True, True, False]


def test_leaderboard_errors_are_seed_sem_with_eval_se_or_eval_se(sweep3, tmp_path):
    lb = leaderboard(load_results(sweep3).df, "proxy")
    assert len(lb) == 5 and set(lb["seeds"]) == {3}
    res = load_results(sweep3)
    vals = res.done[res.done["label"] == "lora"]["plasticity_nll"]
    row = lb[lb["label"] == "lora"].iloc[0]
    assert row["plasticity_nll"] == pytest.approx(vals.mean())
    ses = res.done[res.done["label"] == "lora"]["plasticity_nll_se"]
    assert row["plasticity_nll_err"] == pytest.approx(math.sqrt(vals.var(ddof=1) / 3 + (ses ** 2).mean()))
    assert row["err_kind"] == "seed SEM ⊕ eval SE (n=3)"
    assert row["forgetting_per_gain"] == pytest.approx(row["forgetting_nll"] / row["plasticity_nll"])
    one = leaderboard(load_results(write_sweep(tmp_path / "one", seeds=(0,))).df, "proxy")
    r = one[one["label"] == "lora"].iloc[0]
    assert r["err_kind"] == "eval SE (1 seed)" and r["plasticity_nll_err"] == pytest.approx(0.008)
    assert one["pareto"].any() and list(one.columns[:4]) == ["model", "target", "objective", "label"]


def test_pick_scale_uses_proxies_when_accuracy_is_at_the_floor(tmp_path):
    rec = make_record("lora")
    for b in rec["eval"]["compare"]["benchmarks"].values():
        b.update(base=0.0, tuned=0.0, delta=0.0)
    for a in rec["eval"]["compare"]["axes"].values():
        a.update(base=0.0, tuned=0.0, delta=0.0)
    write_run(tmp_path, rec)
    assert pick_scale(load_results(tmp_path).df) == "proxy"
    assert pick_scale(load_results(write_sweep(tmp_path / "s")).df) == "accuracy"


def test_filters():
    df = pd.DataFrame({"label": ["a", "b", "c"], "target": ["x", "x", "y"]})
    assert list(filter_runs(df, label=["a", "c"], target=None)["label"]) == ["a", "c"]
    assert list(filter_runs(df, label=[], target=["x"])["label"]) == ["a", "b"]
    assert list(filter_runs(df, label=["a"], nosuchcolumn=["z"])["label"]) == ["a"]
    assert options(df, "target") == ["x", "y"] and options(df, "nope") == []


def test_seed_values_are_the_finished_runs_of_one_method(sweep3):
    res = load_results(sweep3)
    v = seed_values(res.df, "lora", "plasticity_nll", target="math")
    assert len(v) == 3 and set(v) == set(res.done[res.done["label"] == "lora"]["plasticity_nll"])
    assert len(seed_values(res.df, "dora", "plasticity_nll")) == 0  # the failed run is not a result


def test_value_at_gain_interpolates_linearly_in_alpha():
    c = pd.DataFrame({"alpha": [0, 0.5, 1.0], "gain": [0.0, 0.4, 0.6], "forgetting": [0.0, 0.1, 0.3],
                      "forgetting_se": [0.0, 0.02, 0.04]})
    v = value_at_gain(c, 0.5)  # between α=0.5 (0.4) and α=1 (0.6): t = 0.5
    assert v["alpha"] == pytest.approx(0.75) and v["forgetting"] == pytest.approx(0.2) and v["se"] == pytest.approx(0.03)
    assert value_at_gain(c, 0.2)["forgetting"] == pytest.approx(0.05)
    assert value_at_gain(c, 0.7) is None  # never reached: no extrapolation


def test_matched_plasticity_level_and_one_seed_note(tmp_path):
    root = write_sweep(tmp_path, labels=("full", "vera", "pissa"), seeds=(0,))
    res = load_results(root)
    curves = interpolation_curves(res)
    assert set(curves["alpha"]) == {0.0, 0.25, 0.5, 0.75, 1.0}
    (g,) = matched_plasticity(curves)["groups"]
    assert g["level"] == pytest.approx(curves.groupby("key")["gain"].max().min())  # vera's reach
    m = g["methods"].set_index("label")
    assert m.loc["vera", "alpha_at_level"] == pytest.approx(1.0, abs=0.2)
    assert m.loc["full", "forgetting_at_level"] < m.loc["pissa", "forgetting_at_level"]
    assert "seed variance was not measured" in g["note"]
    assert set(g["pairs"]["test"]) == {"eval-se"}
    g2 = matched_plasticity(curves, level=0.1)["groups"][0]
    assert g2["level"] == 0.1 and g2["runs"]["reached"].all()


def test_matched_plasticity_never_mixes_scorer_kinds():
    """An NLL gain (nats) and an accuracy gain (a share) are not one axis: each kind is its own group."""
    def curve(key, label, kind, gains, forg):
        return [{"key": key, "run_id": key, "model": "m", "target": "t", "objective": "sft", "label": label,
                 "method": label, "seed": 0, "path": "weights", "kind": kind, "alpha": a, "gain": g,
                 "gain_se": 0.01, "forgetting": f, "forgetting_se": 0.01}
                for a, g, f in zip((0.0, 0.5, 1.0), gains, forg)]
    curves = pd.DataFrame(curve("r1", "lora", "nll", (0, 0.8, 1.6), (0, 0.1, 0.2))
                          + curve("r2", "oft", "accuracy", (0, 0.05, 0.1), (0, 0.01, 0.02)))
    groups = matched_plasticity(curves)["groups"]
    assert sorted(g["kind"] for g in groups) == ["accuracy", "nll"]
    by = {g["kind"]: g for g in groups}
    # each level is its own kind's reach (mixed, both would be read at the accuracy curve's 0.1 nats)
    assert by["nll"]["level"] == pytest.approx(1.6) and by["accuracy"]["level"] == pytest.approx(0.1)
    assert list(by["nll"]["methods"]["label"]) == ["lora"] and list(by["accuracy"]["methods"]["label"]) == ["oft"]


def test_metric_correlations_by_hand():
    df = pd.DataFrame({"state": "done", "diag:m": [1.0, 2.0, 3.0, 4.0], "forgetting": [1.0, 4.0, 9.0, 16.0],
                       "diag:flat": [1.0, 1.0, 1.0, 1.0]})
    c = metric_correlations(df, "forgetting").set_index("metric")
    assert c.loc["m", "spearman"] == pytest.approx(1.0)
    assert c.loc["m", "pearson"] == pytest.approx(np.corrcoef([1, 2, 3, 4], [1, 4, 9, 16])[0, 1])
    assert math.isnan(c.loc["flat", "pearson"]) and c.loc["m", "n"] == 4


def test_exports_round_trip(sweep3):
    lb = leaderboard(load_results(sweep3).df, "accuracy")
    back = pd.read_csv(io.StringIO(export(lb, "csv")))
    assert list(back["label"]) == list(lb["label"]) and back["target_gain"].tolist() == pytest.approx(lb["target_gain"].tolist())
    js = json.loads(export(lb, "json"))
    assert len(js) == 5 and js[0]["label"] == lb.iloc[0]["label"]
    md = export(lb, "md").splitlines()
    assert len(md) == 7 and md[0].startswith("| model | target") and set(md[1]) <= set("|-")
    tex = export(lb, "tex")
    assert r"\toprule" in tex and r"target\_gain" in tex and tex.count(r"\\") == 6
    with pytest.raises(ValueError):
        export(lb, "xlsx")


def test_detail_tables(sweep3):
    res = load_results(sweep3)
    rec = res.records[res.done.iloc[0]["key"]]
    bt = benchmark_table(rec)
    assert {"ifeval", "bbh", "nq_open", "gsm8k", "math500"} <= set(bt["benchmark"])
    assert set(bt[bt["benchmark"] == "gsm8k"]["axis"]) == {"target"}
    mt = module_table(rec)
    assert len(mt) == 3 and "cka_general" in mt and "csd_rel_general" in mt
    q = rec.diagnostics["modules"]["model.layers.10.self_attn.q_proj"]
    row = mt.set_index("module").loc["model.layers.10.self_attn.q_proj"]
    assert row["csd_ratio_rel"] == q["csd"]["ratio"]["rel"] and row["dw_frobenius"] == q["spectral"]["frobenius_norm"]
    assert row["dw_principal_fraction"] == q["spectral"]["principal_fraction"]
    assert list(module_table(RunRecord()).columns) == ["module", *(c for c, _ in MODULE_COLUMNS)]
    log = train_log(sweep3 / res.done.iloc[0]["key"])
    assert list(log["step"]) == list(range(1, 11))


def test_module_table_has_every_summary_metric(sweep3):
    """Every per-module scalar a run's diagnostics summary averages is a module-table column under the
    summary's name (the columns come from the metric registry), and every module has its value."""
    res = load_results(sweep3)
    rec = res.records[res.done.iloc[0]["key"]]
    mt = module_table(rec)
    summary = rec.diagnostics["summary"]
    assert set(summary) <= set(mt.columns), set(summary) - set(mt.columns)
    for key in summary:
        assert mt[key].notna().all(), key


def test_results_library_never_imports_heavy_modules(sweep3):
    """Load a results tree, build a leaderboard, render the report and export it in a fresh process:
    no torch, transformers, peft or lm-eval (nor arena's training stack) gets imported."""
    code = ("import sys; from arena.results.load import load_results; from arena.results.leaderboard import leaderboard; "
            "from arena.results.exports import export; from arena.results.matched import interpolation_curves, "
            "matched_plasticity; from arena.results import figures; from arena.reports.render import render; "
            "import arena.records; "
            f"res = load_results({str(sweep3)!r}); lb = leaderboard(res.done, 'proxy'); assert len(lb) == 5; "
            "export(lb, 'md'); matched_plasticity(interpolation_curves(res)); render(res.root, 'md'); "
            "bad = [m for m in ('torch', 'transformers', 'peft', 'lm_eval', 'arena.experiment', 'arena.training', "
            "'arena.evaluation', 'dashboard') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
