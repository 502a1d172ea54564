"""End to end on the tiny model: evaluate_model, the base cache, compare, `arena eval`, step probe.

Very small limits and generation caps keep the file well under a minute on 2 CPU cores; the real
model is exercised by the @slow test at the bottom.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import pytest
import torch

from arena.evaluation import base_scores, compare, evaluate_model, make_step_probe
from arena.evaluation.proxies import ProxySettings
from arena.evaluation.settings import RunSettings, TaskOptions


def _find_data_dir() -> Path | None:
    env = os.environ.get("ARENA_DATA_DIR")
    cand = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return cand if (cand / "ifeval" / "input_data.jsonl").is_file() else None


DATA = _find_data_dir()
pytestmark = pytest.mark.skipif(DATA is None, reason="real data folder not found: set ARENA_DATA_DIR")

CAPS = {"ifeval": 6, "nq_open": 4, "arith": 6, "bbh": 4}
SMALL = ProxySettings(n_ifeval=2, n_nq=2, max_new_tokens=6, target_examples=3)
SETTINGS = RunSettings(batch_size=8, options=TaskOptions(max_gen_toks=CAPS))
CLI_FAST = ["--max-gen-toks", "6", "--proxy-prompts", "4", "--proxy-tokens", "6", "--no-progress"]


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # A private cache per test session: base scores and converted files never leak between runs.
    # The tiny model needs no prepared folder, so nothing else lives there.
    monkeypatch.setenv("ARENA_CACHE", str(tmp_path_factory.getbasetemp() / "arena-cache"))


@pytest.fixture(scope="module")
def tiny():
    from arena.models.loader import load_model

    model, tok, _ = load_model("tiny")
    return model, tok


def test_evaluate_model_scores_axes_proxies_and_leaves_the_caller_untouched(tiny):
    model, tok = tiny
    model.train()
    random.seed(7)
    torch.manual_seed(7)
    expect_py, expect_torch = random.random(), torch.rand(1)
    random.seed(7)
    torch.manual_seed(7)
    r = evaluate_model(model, tok, ["general", "arith"], limit=3, data_dir=str(DATA), seed=0,
                       tasks=["ifeval", "nq_open", "arith"], settings=SETTINGS, proxies=SMALL)
    # caller's RNG streams and train mode are as before (an in-training probe must not perturb the run)
    assert random.random() == expect_py and torch.equal(torch.rand(1), expect_torch)
    assert model.training
    assert set(r["tasks"]) == {"ifeval", "nq_open", "arith"}
    ife = r["tasks"]["ifeval"]
    assert ife["metric"] == "inst_level_strict_acc" and ife["n"] == 3 and ife["n_units"] >= 3
    assert {"prompt_level_strict_acc", "inst_level_strict_acc"} <= set(ife["metrics"])
    assert ife["settings"]["max_gen_toks"] == 6 and ife["settings"]["chat_template"] is True
    for t in r["tasks"].values():
        assert 0 <= t["score"] <= 1 and t["n"] == 3 and not math.isnan(t["se"])
        assert len(t["units"]["doc_ids"]) == 3
    assert r["axes"]["general"]["benchmarks"] == ["ifeval", "nq_open"] and not r["axes"]["general"]["complete"]
    assert r["axes"]["target"]["benchmarks"] == ["arith"] and r["axes"]["target"]["complete"]
    assert r["proxies"]["general_nll"]["n"] == 4 and r["proxies"]["general_nll"]["score"] > 0
    assert r["proxies"]["target_nll"]["n"] == 3
    assert r["settings"]["max_gen_toks"] == {"ifeval": 6, "nq_open": 4, "arith": 6}
    assert r["engine"]["generation"]["tokens"] >= 0 and r["engine"]["lm_eval"]
    json.dumps(r)  # a result is plain JSON

    # same model, same documents: every change is exactly 0 and paired
    r2 = evaluate_model(model, tok, ["general", "arith"], limit=3, data_dir=str(DATA), seed=0,
                        tasks=["ifeval", "nq_open", "arith"], settings=SETTINGS, proxies=False)
    c = compare(r, r2)
    assert all(b["paired"] and b["delta"] == 0 for b in c["benchmarks"].values())
    assert c["forgetting"]["value"] == 0 and c["target_gain"]["value"] == 0


def test_base_scores_are_cached_and_invalidated_by_settings(tiny):
    kw = dict(limit=2, data_dir=str(DATA), tasks=["nq_open", "arith"], settings=SETTINGS, proxies=SMALL)
    first = base_scores("tiny", ["general", "arith"], **kw)
    assert sorted(first["cache"]["misses"]) == ["arith", "nq_open", "proxy:general_nll", "proxy:target_nll"]
    assert first["cache"]["hits"] == []
    second = base_scores("tiny", ["general", "arith"], **kw)
    assert second["cache"]["misses"] == [] and len(second["cache"]["hits"]) == 4
    assert second["tasks"]["nq_open"]["units"] == first["tasks"]["nq_open"]["units"]
    assert second["reference"]["items"] == first["reference"]["items"]
    assert all(t["cached"] for t in second["tasks"].values())
    # a different limit, generation cap or seed is a different key
    third = base_scores("tiny", ["general", "arith"], **{**kw, "limit": 3})
    assert set(third["cache"]["misses"]) >= {"arith", "nq_open"}
    caps = RunSettings(batch_size=8, options=TaskOptions(max_gen_toks={**CAPS, "nq_open": 5}))
    fourth = base_scores("tiny", ["general", "arith"], **{**kw, "settings": caps})
    assert fourth["cache"]["misses"] == ["nq_open"]


def test_base_cache_is_invalidated_by_a_changed_data_file(tmp_path, monkeypatch):
    import shutil

    # keys are content-addressed (file sha256, not folder path): a fresh cache, or the copy would hit
    monkeypatch.setenv("ARENA_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    shutil.copytree(DATA / "nq_open", data / "nq_open")
    kw = dict(tasks=["nq_open"], limit=2, settings=SETTINGS, proxies=False)
    assert base_scores("tiny", ["general"], data_dir=str(data), **kw)["cache"]["misses"] == ["nq_open"]
    assert base_scores("tiny", ["general"], data_dir=str(data), **kw)["cache"]["hits"] == ["nq_open"]
    with (data / "nq_open" / "NQ-open.dev.jsonl").open("a") as f:
        f.write(json.dumps({"question": "an extra question", "answer": ["x"]}) + "\n")
    assert base_scores("tiny", ["general"], data_dir=str(data), **kw)["cache"]["misses"] == ["nq_open"]


def _cli(capsys, *argv):
    from arena.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_eval_model_prints_table_and_hits_the_cache(capsys):
    args = ["eval", "--model", "tiny", "--suite", "general", "--tasks", "ifeval,nq_open", "--limit", "2",
            "--data-dir", str(DATA), *CLI_FAST]
    code, out, err = _cli(capsys, *args)
    assert code == 0, err
    assert "inst_level_strict_acc" in out and "nq_open" in out and "general axis" in out
    assert "0 hit(s)" in out
    code, out, _ = _cli(capsys, *args)
    assert code == 0 and "3 hit(s), 0 miss(es)" in out  # ifeval, nq_open, general NLL proxy


def test_cli_missing_data_exits_2_naming_the_file(capsys, tmp_path):
    code, out, err = _cli(capsys, "eval", "--model", "tiny", "--suite", "medical", "--data-dir", str(tmp_path),
                          "--no-proxies")
    assert code == 2
    assert "medqa/phrases_no_exclude_test.jsonl" in err and "--data-dir" in err and "Traceback" not in err
    code, _, err = _cli(capsys, "eval", "--model", "tiny", "--suite", "general", "--tasks", "ifevl")
    assert code == 2 and "did you mean 'ifeval'" in err and err.startswith("arena eval: error: --tasks: ")
    code, _, err = _cli(capsys, "eval", "--model", "tiny", "--suite", "generl")
    assert code == 2 and err.startswith("arena eval: error: --suite: invalid value 'generl'"), err
    code, _, err = _cli(capsys, "eval", "--model", "tiny", "--max-gen-toks", "ifeval=x")
    assert code == 2 and "--max-gen-toks" in err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from arena.config import run_config_from_dict
    from arena.experiment import run_training

    out = tmp_path_factory.mktemp("runs") / "lora"
    cfg = run_config_from_dict({"model": "tiny", "method": "lora", "target": "arith", "objective": "sft",
                                "train": {"steps": 2, "progress": False, "seq_len": 64},
                                "probe": {"heldout": 4, "greedy": 0}, "data_dir": str(DATA), "out": str(out)})
    run_training(cfg, log=lambda m: None)
    return out


def test_cli_eval_run_compares_with_base_and_stores_in_record(capsys, tiny_run):
    before = json.loads((tiny_run / "record.json").read_text())
    code, out, err = _cli(capsys, "eval", "--run", str(tiny_run), "--suite", "general,target", "--tasks",
                          "nq_open,arith", "--limit", "2", *CLI_FAST)
    assert code == 0, err
    assert "change" in out and "target gain" in out and "forgetting" in out and "general ΔCE" in out
    rec = json.loads((tiny_run / "record.json").read_text())
    for key, value in before.items():  # nothing else in the record changed
        assert rec[key] == value
    ev = rec["eval"]
    assert set(ev) >= {"base", "tuned", "compare", "created", "command"}
    assert set(ev["tuned"]["tasks"]) == {"nq_open", "arith"}
    assert ev["compare"]["benchmarks"]["arith"]["paired"]
    assert "reference" not in ev["base"]
    # a second evaluation with the same settings adds its benchmarks (here ifeval) to the stored ones
    code, out, err = _cli(capsys, "eval", "--run", str(tiny_run), "--suite", "general", "--tasks", "ifeval",
                          "--limit", "2", *CLI_FAST)
    assert code == 0, err
    ev = json.loads((tiny_run / "record.json").read_text())["eval"]
    assert set(ev["tuned"]["tasks"]) == {"nq_open", "arith", "ifeval"}
    assert ev["tuned"]["axes"]["general"]["benchmarks"] == ["ifeval", "nq_open"]
    assert ev["tuned"]["axes"]["general"]["missing"] == ["bbh"]
    assert set(ev["compare"]["benchmarks"]) == {"nq_open", "arith", "ifeval"}


def test_step_probe_reports_deltas_and_preserves_state(tiny, tiny_run):
    import yaml

    from arena.components import build_components
    from arena.config import run_config_from_dict

    model, tok = tiny
    cfg = run_config_from_dict(yaml.safe_load((tiny_run / "config.yaml").read_text()))
    _, target, _ = build_components(cfg, check_data=False)
    probe = make_step_probe(cfg, tok, target, torch.device("cpu"), "fp32",
                            overrides={"general_prompts": 4, "target_examples": 4, "max_new_tokens": 6,
                                       "tasks": ["arith"], "limit": 2})
    model.train()
    torch.manual_seed(3)
    expect = torch.rand(1)
    torch.manual_seed(3)
    row = probe(model, 5)
    assert torch.equal(torch.rand(1), expect) and model.training
    assert row["step"] == 5 and row["arith_n"] == 2 and 0 <= row["arith"] <= 1
    # the tiny base model *is* this model: its changes against the base are exactly zero
    assert row["general_nll_delta"] == pytest.approx(0, abs=1e-6)
    assert row["target_nll_delta"] == pytest.approx(0, abs=1e-6)
    assert row["general_nll"] == pytest.approx(probe.base["general"])
    assert row["probe_s"] > 0


def test_step_probe_settings_come_from_python_not_the_run_config():
    """docs/evaluation.md: the run config has no `step_probe:` section; a mapping passed as cfg does."""
    from arena.config import run_config_from_dict
    from arena.errors import ConfigError
    from arena.evaluation.step_probe import StepProbeSettings, _settings_from

    with pytest.raises(ConfigError, match="step_probe.*unknown section"):
        run_config_from_dict({"model": "tiny", "method": "lora", "target": "arith", "objective": "sft",
                              "step_probe": {"tasks": ["arith"]}})
    cfg = run_config_from_dict({"model": "tiny", "method": "lora", "target": "arith", "objective": "sft"})
    assert _settings_from(cfg, None) == StepProbeSettings()
    assert _settings_from({"step_probe": {"limit": 4}}, {"tasks": ["arith"]}) == StepProbeSettings(limit=4, tasks=["arith"])
    with pytest.raises(ConfigError, match="step_probe"):
        _settings_from({"step_probe": {"limt": 4}}, None)


# ------------------------------------------------------------------ the real model

@pytest.mark.slow
def test_real_model_ifeval_runs_the_sentence_counting_prompts():
    """SmolLM2-135M-Instruct on 8 IFEval prompts whose checkers need punkt_tab (acceptance): they
    run on real, non-empty responses without the late LookupError that docs/design.md "IFEval needs
    punkt_tab" warns about."""
    from arena.evaluation.punkt import PUNKT_INSTRUCTIONS
    from arena.evaluation.runner import plan, run_tasks
    from arena.models import catalog
    from arena.models.loader import load_model

    # conftest points ARENA_CACHE at a temporary folder; borrow the user's prepared model read-only.
    real = Path.home() / ".cache" / "arena" / "models" / "smollm2-135m-instruct"
    if not catalog.is_prepared("smollm2-135m-instruct"):
        if not (real / "config.json").is_file():
            pytest.skip("smollm2-135m-instruct is not prepared (arena models prepare smollm2-135m-instruct)")
        catalog.model_dir("smollm2-135m-instruct").parent.mkdir(parents=True, exist_ok=True)
        catalog.model_dir("smollm2-135m-instruct").symlink_to(real, target_is_directory=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # conftest's 1 thread suits the tiny model, not a 135M one
    try:
        model, tok, _ = load_model("smollm2-135m-instruct")
        s = RunSettings(batch_size=8, options=TaskOptions(max_gen_toks={"ifeval": 48}))
        docs = plan(["ifeval"], str(DATA), s)["tasks"]["ifeval"].eval_docs
        punkt = [i for i, d in enumerate(docs) if PUNKT_INSTRUCTIONS & set(d["instruction_id_list"])][:8]
        r = run_tasks(model, tok, ["ifeval"], str(DATA), s, select={"ifeval": punkt})["tasks"]["ifeval"]
    finally:
        torch.set_num_threads(threads)
    assert r["n"] == 8 and r["units"]["doc_ids"] == punkt
    assert r["empty_responses"] < 8  # the sentence checkers saw real text
    assert r["n_units"] >= 8 and 0 <= r["score"] <= 1
