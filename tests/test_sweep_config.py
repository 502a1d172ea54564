"""Sweep configs: validation with named fields, expansion, stable run ids, shipped presets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from arena.errors import ArenaError, ConfigError
from arena.sweeps.expand import expand
from arena.sweeps.load import load_sweep_config, sweep_config_from_dict

REPO = Path(__file__).resolve().parents[1]
ID_RE = re.compile(r"^[A-Za-z0-9_.+-]+-[a-z0-9_.]+-[a-z0-9_.]+-s\d+-[0-9a-f]{8}$")


def tiny_sweep(**changes) -> dict:
    d = {
        "name": "t",
        "model": "tiny",
        "targets": [{"name": "arith", "n_train": 256}],
        "methods": [{"name": "full", "lr": 1e-3}, {"name": "lora", "rank": 4, "lr": 1e-2}, "oft"],
        "seeds": [0, 1],
        "budget": {"steps": 3, "batch_size": 4, "seq_len": 64},
        "train": {"precision": "fp32", "device": "cpu"},
        "eval": {"enabled": False},
        "diagnostics": {"enabled": False},
    }
    d.update(changes)
    return d


def test_expansion_order_ids_and_per_method_lr():
    runs = expand(sweep_config_from_dict(tiny_sweep()))
    assert [(r.label, r.seed) for r in runs] == [("full", 0), ("lora", 0), ("oft", 0), ("full", 1), ("lora", 1), ("oft", 1)]
    assert all(ID_RE.match(r.run_id) for r in runs), [r.run_id for r in runs]
    assert runs[0].run_id.startswith("full-arith-sft-s0-")
    lrs = {r.label: r.config["train"]["lr"] for r in runs}
    assert lrs == {"full": 1e-3, "lora": 1e-2, "oft": None}  # None -> the method's own default
    assert runs[1].config["method"]["rank"] == 4
    assert {r.config["train"]["steps"] for r in runs} == {3}  # the shared budget


def test_ids_are_stable_and_track_only_what_changes_training():
    base = {r.run_id for r in expand(sweep_config_from_dict(tiny_sweep()))}
    assert base == {r.run_id for r in expand(sweep_config_from_dict(tiny_sweep()))}
    # presentation-only and post-training settings keep the ids (re-scoring, not retraining)
    same = tiny_sweep(train={"precision": "fp32", "device": "cpu", "progress": False, "threads": 2},
                      eval={"enabled": True, "limit": 3}, out="/somewhere/else")
    assert base == {r.run_id for r in expand(sweep_config_from_dict(same))}
    # the budget changes every run; one method's option changes only that method's runs
    assert base.isdisjoint({r.run_id for r in expand(sweep_config_from_dict(tiny_sweep(budget={"steps": 4})))})
    changed = tiny_sweep(methods=[{"name": "full", "lr": 1e-3}, {"name": "lora", "rank": 8, "lr": 1e-2}, "oft"])
    diff = base ^ {r.run_id for r in expand(sweep_config_from_dict(changed))}
    assert diff and all(i.startswith("lora-") for i in diff)


@pytest.mark.parametrize("change, field, words", [
    ({"methds": []}, "methds", "did you mean 'methods'"),
    ({"methods": [{"name": "lora", "rnk": 4}]}, "methods[0] (lora)", "rnk"),
    ({"methods": [{"name": "lora", "rank": -1}]}, "methods[0] (lora)", "rank"),
    ({"methods": [{"name": "lorra"}]}, "methods[0] (lorra)", "did you mean 'lora'"),
    ({"methods": ["lora", {"name": "lora", "rank": 4}]}, "methods[1].label", "already used"),
    ({"train": {"steps": 5}}, "train.steps", "budget"),
    ({"budget": {"steps": 0}}, "budget.steps", "positive"),
    ({"seeds": [1, 1]}, "seeds", "repeat"),
    ({"eval": {"limit": 0}}, "eval.limit", "positive"),
    ({"eval": {"suites": ["genral"]}}, "eval.suites", "did you mean 'general'"),
    ({"interpolation": {"enabled": True, "methods": ["dora"]}}, "interpolation.methods", "not a method"),
    ({"methods": [{"name": "lora", "lr": -1}]}, "methods[0].lr", "> 0"),
    ({"methods": [{"name": "lora", "objectives": ["grpo"]}]}, "methods[0].objectives", "not an objective"),
    ({"runner": {"threads": "many"}}, "runner.threads", "auto"),
    ({"runner": {"jobs": 0}}, "runner.jobs", "positive"),
])
def test_validation_names_the_field(change, field, words):
    with pytest.raises(ConfigError) as e:
        sweep_config_from_dict(tiny_sweep(**change))
    assert field in str(e.value) and words in str(e.value), str(e.value)


def test_missing_methods_and_targets_are_errors():
    d = tiny_sweep()
    del d["methods"]
    with pytest.raises(ArenaError, match="methods"):
        sweep_config_from_dict(d)
    with pytest.raises(ArenaError, match="targets"):
        sweep_config_from_dict(tiny_sweep(targets=[]))


def test_stages_per_method_and_interpolation_path():
    cfg = sweep_config_from_dict(tiny_sweep(
        eval={"limit": 4}, diagnostics={"enabled": True, "max_prompts": 4},
        interpolation={"enabled": True, "alphas": [0.5], "methods": ["lora", "oft"], "seeds": [0]}))
    runs = {(r.label, r.seed): r for r in expand(cfg)}
    assert set(runs["full", 0].stages) == {"eval", "diagnostics"}
    assert runs["lora", 0].stages["interpolation"]["path"] == "weights"
    assert runs["oft", 0].stages["interpolation"]["path"] == "generator"  # the Cayley-generator path
    assert runs["lora", 0].stages["interpolation"]["alphas"] == [0.0, 0.5, 1.0]  # 0 and 1 always
    assert "interpolation" not in runs["lora", 1].stages


def test_objective_restriction_and_per_objective_lr():
    cfg = sweep_config_from_dict(tiny_sweep(
        seeds=[0], objectives=["sft", {"name": "grpo", "n_samples": 2, "train": {"batch_size": 2}}],
        methods=[{"name": "full", "lr": {"sft": 1e-3, "grpo": 1e-6}}, {"name": "vera", "objectives": ["sft"]}]))
    runs = {(r.label, r.objective): r for r in expand(cfg)}
    assert set(runs) == {("full", "sft"), ("full", "grpo"), ("vera", "sft")}
    assert runs["full", "grpo"].config["train"]["lr"] == 1e-6
    assert runs["full", "grpo"].config["train"]["batch_size"] == 2
    assert runs["full", "sft"].config["train"]["batch_size"] == 4


@pytest.mark.parametrize("name, n_runs", [
    ("quickstart", 5), ("peft-arena-math", 16), ("peft-arena-medical", 16),
    ("peft-arena-math-cpu", 10), ("peft-arena-medical-cpu", 10),
])
def test_shipped_sweep_configs_validate(name, n_runs):
    cfg = load_sweep_config(str(REPO / "configs" / f"{name}.yaml"))
    runs = expand(cfg)
    assert len(runs) == n_runs and cfg.name == name
    lrs = {r.label: r.config["train"]["lr"] for r in runs if r.objective == "sft"}
    full = next(v for k, v in lrs.items() if k.startswith("full"))
    lora = next(v for k, v in lrs.items() if k.startswith("lora"))
    assert full < lora  # full FT trains at a lower LR than the adapters
    if name == "quickstart":
        assert cfg.models == ["smollm2-135m-instruct"]
        assert {r.method for r in runs} == {"full", "lora", "pissa", "vera", "oft"}
        assert sum("interpolation" in r.stages for r in runs) == 1
        assert all({"eval", "diagnostics"} <= set(r.stages) for r in runs)
        assert cfg.runner.threads == "auto"  # 1 or 2 threads, whichever is faster on the machine now
    if name.startswith("peft-arena"):
        assert cfg.paper == "peft-arena"


def test_overrides_and_cli_dry_run(tmp_path, capsys):
    from arena.cli import main

    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(tiny_sweep(out=str(tmp_path / "out"))))
    cfg = load_sweep_config(str(p), ["seeds=[3]", "budget.steps=2"])
    assert [r.seed for r in expand(cfg)] == [3, 3, 3] and cfg.budget.steps == 2
    assert main(["sweep", str(p), "--dry-run", "--set", "seeds=[0]"]) == 0
    out = capsys.readouterr().out
    assert out.count("pending") == 3 and "3 runs, 0 complete, 3 to run" in out
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    assert main(["sweep", str(p), "--set", "methods=[{name: lora, rnk: 2}]"]) == 2
    assert "rnk" in capsys.readouterr().err


def test_stage_sections_are_the_stage_settings():
    """What the plan stores rebuilds, in the worker, the settings object the section describes."""
    from arena.analysis.settings import DiagnosticsSettings, InterpolationSettings
    from arena.evaluation.settings import EvalSettings
    from arena.schema import build

    cfg = sweep_config_from_dict(tiny_sweep(
        eval={"limit": 4, "bbh_variant": "zeroshot"}, diagnostics={"enabled": True, "shared_prefix": "once"},
        interpolation={"enabled": True, "alphas": [0.5], "delta": 0.01, "methods": ["oft"]}))
    assert isinstance(cfg.eval, EvalSettings) and isinstance(cfg.diagnostics, DiagnosticsSettings)
    oft = next(r for r in expand(cfg) if r.label == "oft")
    assert build(EvalSettings, oft.stages["eval"], "eval") == cfg.eval.settings()
    assert build(DiagnosticsSettings, oft.stages["diagnostics"]).shared_prefix == "once"
    interp = build(InterpolationSettings, oft.stages["interpolation"])
    assert (interp.path, interp.delta, interp.alphas) == ("generator", 0.01, [0.0, 0.5, 1.0])


def test_settings_fields_at_their_default_stay_out_of_the_plan():
    """A field the settings gained later changes a stage's fingerprint only when it is set."""
    from arena.sweeps.expand import stage_fingerprint

    def diag(**d):
        cfg = sweep_config_from_dict(tiny_sweep(diagnostics={"enabled": True, **d}))
        return expand(cfg)[0].stages["diagnostics"]

    assert "shared_prefix" not in diag() and "use_cache" not in diag()
    assert stage_fingerprint(diag(shared_prefix="keep")) == stage_fingerprint(diag())
    assert stage_fingerprint(diag(shared_prefix="once")) != stage_fingerprint(diag())


@pytest.mark.parametrize("change, field, words", [
    ({"eval": {"bbh_variant": "fewshoot"}}, "eval.bbh_variant", "fewshot"),
    ({"eval": {"bbh_shots": 5}}, "eval.bbh_shots", "0..3"),
    ({"interpolation": {"suites": ["genral"]}}, "interpolation.suites", "general"),
    ({"interpolation": {"path": "cayley"}}, "interpolation.path", "auto"),
    ({"diagnostics": {"shared_prefix": "twice"}}, "diagnostics.shared_prefix", "once"),
    ({"methods": [{"name": "lora", "lr": {"sft": "fast"}}]}, "methods[0].lr.sft", "number"),
])
def test_stage_settings_are_checked_at_load(change, field, words):
    """Checked by the settings classes themselves (before: only when the stage ran)."""
    with pytest.raises(ConfigError) as e:
        sweep_config_from_dict(tiny_sweep(**change))
    assert field in str(e.value) and words in str(e.value), str(e.value)


def test_ilp_stage_sft_runs_only_with_the_skip_reason():
    from arena.ilp.settings import IlpSettings
    from arena.schema import build

    cfg = sweep_config_from_dict(tiny_sweep(
        seeds=[0], objectives=["sft", {"name": "grpo", "n_samples": 2, "train": {"batch_size": 2}}],
        methods=[{"name": "lora", "rank": 4, "lr": 1e-2}], ilp={"enabled": True, "samples": 8, "threshold": 0.4}))
    runs = {r.objective: r for r in expand(cfg)}
    assert "ilp" in runs["sft"].stages and not runs["sft"].skipped
    assert "ilp" not in runs["grpo"].stages and "SFT runs only" in runs["grpo"].skipped["ilp"]
    assert build(IlpSettings, runs["sft"].stages["ilp"], "ilp") == cfg.ilp.settings()
    assert cfg.ilp.settings().threshold == 0.4
    from arena.sweeps.expand import RunSpec

    assert RunSpec.from_dict(runs["grpo"].to_dict()) == runs["grpo"]  # the reason survives plan.json
    off = sweep_config_from_dict(tiny_sweep())
    assert not any("ilp" in r.stages or r.skipped for r in expand(off))


def test_ilp_off_leaves_plan_and_sweep_yaml_byte_identical(tmp_path):
    from runners.state import write_plan

    def plan_bytes(d, **changes):
        cfg = sweep_config_from_dict(tiny_sweep(objectives=["sft", {"name": "grpo", "n_samples": 2}], **changes))
        return write_plan(tmp_path / d, cfg.to_dict(), expand(cfg)).read_bytes(), yaml.safe_dump(cfg.to_dict())

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    absent, off = plan_bytes("a"), plan_bytes("b", ilp={"enabled": False})
    assert absent == off and b"ilp" not in absent[0] and b"skipped" not in absent[0]
    on = plan_bytes("c", ilp={"enabled": True})
    assert b'"ilp"' in on[0] and b'"skipped"' in on[0] and "ilp:" in on[1]


def test_ilp_settings_are_checked_at_load():
    with pytest.raises(ConfigError) as e:
        sweep_config_from_dict(tiny_sweep(ilp={"enabled": True, "treshold": 0.3}))
    assert "ilp.treshold" in str(e.value) and "threshold" in str(e.value)


def test_shipped_ilp_config():
    cfg = load_sweep_config(str(REPO / "configs" / "ilp-arith-cpu.yaml"))
    runs = expand(cfg)
    assert [r.seed for r in runs] == [0, 1] and {r.method for r in runs} == {"lora"}
    assert all(set(r.stages) == {"ilp"} for r in runs)
    assert cfg.train["save_every"] > 0 and cfg.train["keep_checkpoints"] == 0  # every checkpoint kept (IV, V)
    assert cfg.models == ["smollm2-135m-instruct"] and cfg.ilp.enabled
