"""A resumed sweep must not retrain or re-score: run ids and stage fingerprints are pinned.

tests/data/sweep_fingerprints.json holds, for every shipped sweep config and a few tiny ones that
switch every stage option, each run id and the fingerprint of each of its stage settings (what
`runners.state.stage_done` compares). It was written before the sweep specs became the stage
settings; any change here means finished runs or stages of an existing sweep would run again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from arena.sweeps.expand import expand, stage_fingerprint
from arena.sweeps.load import load_sweep_config, sweep_config_from_dict

REPO = Path(__file__).resolve().parents[1]
EXPECTED = json.loads((REPO / "tests" / "data" / "sweep_fingerprints.json").read_text())


def tiny(**changes) -> dict:
    d = {"name": "t", "model": "tiny", "targets": [{"name": "arith", "n_train": 256}],
         "methods": [{"name": "full", "lr": 1e-3}, {"name": "lora", "rank": 4, "lr": 1e-2}, "oft", "boft"],
         "seeds": [0, 1], "budget": {"steps": 3, "batch_size": 4, "seq_len": 64},
         "train": {"precision": "fp32", "device": "cpu"}}
    d.update(changes)
    return d


TINY_CASES = {
    "tiny-default": tiny(),
    "tiny-all": tiny(
        eval={"limit": 4, "tasks": ["ifeval"], "max_gen_toks": {"ifeval": 100}, "proxy": {"n_ifeval": 4},
              "bbh_variant": "zeroshot", "chat_template": "off", "precision": "fp32", "proxies": False,
              "suites": ["target"], "bbh_shots": 0, "seed": 3, "batch_size": 2},
        diagnostics={"enabled": True, "max_prompts": 4, "modules": ["model.layers.0.self_attn.q_proj"],
                     "precision": "fp32", "max_tokens": 10, "max_length": 9},
        interpolation={"enabled": True, "alphas": [0.5, 0.25, 1], "limit": 3, "suites": ["general"],
                       "scorer": "lm-eval"}),
    "tiny-interp-weights": tiny(interpolation={"enabled": True, "path": "weights", "methods": ["oft", "lora"],
                                               "seeds": [1]}),
    "tiny-off": tiny(eval={"enabled": False}, diagnostics={"enabled": False}),
    # the ilp stage (SFT runs only): pins its fingerprint, and that enabling it changes no run id
    "tiny-ilp": tiny(ilp={"enabled": True, "samples": 16, "n": 3}),
    # the lr_scan axis: pins the scan runs' ids, and that adding a scan changes no main run's id
    "tiny-lr-scan": tiny(lr_scan={"factors": [0.5, 2], "seeds": [0], "methods": ["lora", "oft"]},
                         interpolation={"enabled": True}),
}
SHIPPED = sorted(p.stem for p in (REPO / "configs").glob("*.yaml") if "methods" in yaml.safe_load(p.read_text()))


def _plan(cfg) -> dict:
    return {r.run_id: {s: stage_fingerprint(v) for s, v in r.stages.items()} for r in expand(cfg)}


def test_every_case_is_pinned():
    assert set(EXPECTED) == set(SHIPPED) | set(TINY_CASES)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_keep_run_ids_and_stage_fingerprints(name):
    assert _plan(load_sweep_config(str(REPO / "configs" / f"{name}.yaml"))) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(TINY_CASES))
def test_stage_options_keep_their_fingerprints(name):
    assert _plan(sweep_config_from_dict(TINY_CASES[name])) == EXPECTED[name]


def test_ilp_leaves_run_ids_and_other_stages_alone():
    base = _plan(sweep_config_from_dict(TINY_CASES["tiny-default"]))
    with_ilp = _plan(sweep_config_from_dict(TINY_CASES["tiny-ilp"]))
    assert set(with_ilp) == set(base)
    assert all(with_ilp[r] == {**base[r], "ilp": with_ilp[r]["ilp"]} for r in base)
