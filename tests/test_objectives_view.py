"""The report's "Objectives compared" view (arena/results/objectives.py) on hand-written records:
held-out gain over the start model with the larger of the seed and evaluation SE, forgetting,
reward curves from the train logs, and the verdict against GRPO."""

from __future__ import annotations

import json
import math

import pytest

from arena.reports.render import build, render
from arena.results.load import load_results
from arena.results.objectives import objectives_summary

# objective -> (held-out accuracy after, per seed), start accuracy 0.40 everywhere (n = 100)
AFTER = {"grpo": (0.50, 0.54), "sdpo": (0.70, 0.74), "rlsd": (0.52, 0.50)}
DCE = {"grpo": (0.010, 0.012), "sdpo": (0.050, 0.046), "rlsd": (0.011, 0.009)}


def _se(p, n=100):
    return math.sqrt(p * (1 - p) / n)


def _write(root, objective, seed):
    acc = AFTER[objective][seed]
    run = root / f"lora-arith-{objective}-s{seed}"
    run.mkdir(parents=True)
    rec = {"schema_version": 3, "run_id": run.name, "status": "done", "objective": objective, "target": "arith",
           "config": {"model": {"name": "smollm2-135m-instruct"}, "target": {"name": "arith"},
                      "objective": {"name": objective}, "method": {"name": "lora"}, "train": {"seed": seed}},
           "method": {"name": "lora", "lr": 5e-4}, "train": {"steps": 4},
           "probes": {"base": {"greedy": {"accuracy": 0.40, "se": _se(0.40), "n": 100}},
                      "tuned": {"greedy": {"accuracy": acc, "se": _se(acc), "n": 100}}},
           "eval": {"compare": {"proxies": {"general_nll": {"delta": DCE[objective][seed], "se": 0.002}}}}}
    (run / "record.json").write_text(json.dumps(rec))
    rewards = [0.4 + 0.05 * s + (0.1 if objective == "sdpo" else 0) for s in range(4)]
    (run / "train_log.jsonl").write_text("".join(
        json.dumps({"step": s + 1, "seconds": 2.0 + seed, "reward_mean": r, "teacher_share": 0.5}) + "\n"
        for s, r in enumerate(rewards)))


@pytest.fixture
def sweep(tmp_path):
    for obj in AFTER:
        for seed in (0, 1):
            _write(tmp_path, obj, seed)
    return tmp_path


def test_summary_numbers_and_noise(sweep):
    res = load_results(sweep)
    (g,) = objectives_summary(res)["groups"]
    s = g["summary"].set_index("objective")
    assert g["reference"] == "grpo" and (s["seeds"] == 2).all()
    assert s.loc["sdpo", "heldout_gain"] == pytest.approx(0.32)
    # the seed SE of grpo (sd 0.0283 / √2 = 0.02) is below its evaluation SE: the larger one is used
    ev = math.sqrt((_se(0.4) ** 2 * 2 + _se(0.5) ** 2 + _se(0.54) ** 2) / 2 / 2)
    assert s.loc["grpo", "heldout_gain_se"] == pytest.approx(max(ev, 0.02))
    assert s.loc["grpo", "forgetting_nll"] == pytest.approx(0.011)
    # forgetting SE: seed SE = sd(0.050, 0.046)/√2 = (0.004/√2)/√2 = 0.002 beats the evaluation's 0.002/√2
    assert s.loc["sdpo", "forgetting_nll_se"] == pytest.approx(0.002, rel=1e-6)
    assert s.loc["sdpo", "reward_last"] == pytest.approx(sum(0.5 + 0.05 * i for i in range(4)) / 4)
    assert s.loc["grpo", "s_per_step"] == pytest.approx(2.5) and s.loc["sdpo", "teacher_share"] == 0.5
    p = g["pairs"].set_index("objective")
    assert p.loc["sdpo", "d_heldout_gain"] == pytest.approx(0.20) and p.loc["sdpo", "heldout_gain_beyond_noise"]
    assert not p.loc["rlsd", "heldout_gain_beyond_noise"]  # 0.51 vs 0.52: within noise
    assert p.loc["sdpo", "forgetting_nll_beyond_noise"] and not p.loc["rlsd", "forgetting_nll_beyond_noise"]
    assert len(g["curves"]) == 3 * 2 * 4


def test_report_sections(sweep):
    md = render(sweep, "md", scale="proxy")
    assert "## Objectives compared — smollm2-135m-instruct · arith · lora" in md
    assert "+32.0 ±" in md and "beyond noise" in md and "within noise" in md
    html = render(sweep, "html", scale="proxy")
    assert "Objectives compared" in html and "reward per step" in html


def test_one_objective_has_no_comparison(tmp_path):
    _write(tmp_path, "grpo", 0)
    assert objectives_summary(load_results(tmp_path)) is None
    assert build(tmp_path, scale="proxy").objectives is None


def test_opd_studies_view(tmp_path):
    """Every OPD run with its teacher's accuracy, start model, overlap first -> last and outcome."""
    teacher = tmp_path / "teachers" / "sft-teacher"
    teacher.mkdir(parents=True)
    (teacher / "record.json").write_text(json.dumps({"probes": {"tuned": {"greedy": {"accuracy": 0.58}}}}))
    sweep = tmp_path / "sweep"
    for arm, overlap, acc in (("opd-sft", 0.70, 0.55), ("opd-rl", 0.85, 0.60)):
        run = sweep / f"lora-arith-{arm}-s0"
        run.mkdir(parents=True)
        rec = {"schema_version": 3, "run_id": run.name, "status": "done", "objective": "opd", "target": "arith",
               "config": {"model": {"name": "m", "init_from": str(tmp_path / "warm")}, "target": {"name": "arith"},
                          "objective": {"name": "opd", "teacher": str(teacher), "max_new_tokens": 24, "diag_k": 16},
                          "method": {"name": "lora"}, "train": {"seed": 0}},
               "sweep": {"run_id": run.name, "label": "lora", "seed": 0, "status": "complete", "objective_label": arm},
               "probes": {"base": {"greedy": {"accuracy": 0.45, "se": 0.04, "n": 128}},
                          "tuned": {"greedy": {"accuracy": acc, "se": 0.04, "n": 128}}}}
        (run / "record.json").write_text(json.dumps(rec))
        (run / "train_log.jsonl").write_text("".join(json.dumps(
            {"step": s + 1, "overlap": overlap + 0.01 * s, "reverse_kl": 0.5 - 0.05 * s, "shared_mass": 0.9}) + "\n"
            for s in range(8)))
    from arena.results.opd_studies import opd_summary

    summary = opd_summary(load_results(sweep))
    runs = summary["runs"].set_index("arm")
    assert runs.loc["opd-sft", "teacher_acc"] == 0.58 and runs.loc["opd-rl", "start"] == "warm"
    assert runs.loc["opd-rl", "overlap_first"] == pytest.approx(0.85)
    assert runs.loc["opd-rl", "overlap_last"] == pytest.approx(0.85 + 0.01 * (3 + 4 + 5 + 6 + 7) / 5)
    assert runs.loc["opd-sft", "heldout_gain"] == pytest.approx(0.10)
    assert "k = 16" in summary["note"] and "One seed" in summary["note"] and summary["varying"] == []
    md = render(sweep, "md", scale="proxy")
    assert "## On-policy distillation: overlap and outcome" in md and "0.850 → 0.900" in md and "+15.0 ± 5.7 pp" in md


def test_paired_gain_uses_per_problem_outcomes():
    from arena.results.objectives import paired_gain

    b = {"accuracy": 0.5, "se": 0.25, "per_example": [1, 0, 1, 0]}
    t = {"accuracy": 0.75, "se": 0.2165, "per_example": [1, 1, 1, 0]}
    g, se, kind = paired_gain(b, t)
    # differences (0, 1, 0, 0): mean 0.25, sd 0.5, SE 0.25
    assert (g, se, kind) == (0.25, 0.25, "paired")
    g, se, kind = paired_gain({"accuracy": 0.5, "se": 0.25}, {"accuracy": 0.75, "se": 0.2165})
    assert g == 0.25 and kind == "unpaired" and se == pytest.approx(math.hypot(0.25, 0.2165))


def test_opd_view_finds_a_relative_teacher_from_the_run_folder(tmp_path, monkeypatch):
    """A sweep run from its project folder records `teacher: results/t`; the report may run elsewhere."""
    from arena.results.opd_studies import opd_summary

    proj = tmp_path / "proj"
    (proj / "results" / "t").mkdir(parents=True)
    (proj / "results" / "t" / "record.json").write_text(json.dumps({"probes": {"tuned": {"greedy": {"accuracy": 0.6}}}}))
    run = proj / "results" / "sweep" / "lora-arith-opd-s0"
    run.mkdir(parents=True)
    run.joinpath("record.json").write_text(json.dumps({
        "schema_version": 3, "run_id": run.name, "status": "done", "objective": "opd", "target": "arith",
        "config": {"model": {"name": "m"}, "objective": {"name": "opd", "teacher": "results/t"}, "train": {"seed": 0}}}))
    monkeypatch.chdir(tmp_path)
    runs = opd_summary(load_results(proj / "results" / "sweep"))["runs"]
    assert runs["teacher_acc"].tolist() == [0.6] and runs["start"].tolist() == ["base"]
