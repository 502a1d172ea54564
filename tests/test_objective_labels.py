"""Objective labels in sweeps: two entries of one objective (OPD from two teachers) are told apart
in run ids, plans, records and every report view; a duplicate without a label is refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from arena.errors import ConfigError
from arena.results.load import load_results
from arena.results.objectives import objectives_summary
from arena.sweeps.expand import RunSpec, expand
from arena.sweeps.load import sweep_config_from_dict

TINY = {"model": "tiny", "targets": [{"name": "arith", "n_train": 256}],
        "budget": {"steps": 2, "batch_size": 2, "seq_len": 64},
        "train": {"precision": "fp32", "device": "cpu", "warmup_steps": 0, "threads": 1},
        "probe": {"heldout": 4, "greedy": 4, "max_new_tokens": 4},
        "eval": {"enabled": False}, "diagnostics": {"enabled": False}}


def _cfg(objectives, **kw):
    return sweep_config_from_dict({"name": "labels", **TINY, "methods": [{"name": "lora", "lr": 1e-2}],
                                   "objectives": objectives, **kw})


def test_labels_must_name_one_entry():
    with pytest.raises(ConfigError, match=r"objectives\[1\]\.label.*already names objectives\[0\]"):
        _cfg([{"name": "opd", "label": "a", "teacher": "tiny"}, {"name": "opd", "label": "a", "teacher": "x"}])
    with pytest.raises(ConfigError, match=r"objectives\[1\]\.label.*'sft'.*already names objectives\[0\]"):
        _cfg(["sft", {"name": "opd", "label": "sft", "teacher": "tiny"}])
    with pytest.raises(ConfigError, match=r"objectives\[0\]\.label"):
        _cfg([{"name": "opd", "label": "a b", "teacher": "tiny"}])
    # unlabelled entries of one objective stay allowed (an SFT baseline and its mitigation variant)
    runs = expand(_cfg(["sft", {"name": "sft", "bucketing": "conflicts"}]))
    assert len({r.run_id for r in runs}) == 2 and all(r.objective_label is None for r in runs)


def test_labels_name_the_runs_and_select_lr_and_method_restrictions(teacher_dir):
    cfg = sweep_config_from_dict({
        "name": "labels", **TINY,
        "methods": [{"name": "lora", "lr": {"opd-b": 3e-3, "opd": 2e-3, "default": 1e-3}},
                    {"name": "full", "objectives": ["opd-b"], "lr": 1e-4}],
        "objectives": ["sft", {"name": "opd", "label": "opd-a", "teacher": "tiny"},
                       {"name": "opd", "label": "opd-b", "teacher": str(teacher_dir)}]})
    runs = expand(cfg)
    by = {(r.label, r.objective_label or r.objective): r for r in runs}
    assert set(by) == {("lora", "sft"), ("lora", "opd-a"), ("lora", "opd-b"), ("full", "opd-b")}
    assert by[("lora", "opd-a")].run_id.startswith("lora-arith-opd-a-s0-")
    assert by[("lora", "opd-b")].config["train"]["lr"] == 3e-3 and by[("lora", "opd-a")].config["train"]["lr"] == 2e-3
    assert "label" not in by[("lora", "opd-a")].config["objective"]  # the label is not an objective option
    d = by[("lora", "opd-b")].to_dict()
    assert d["objective_label"] == "opd-b" and RunSpec.from_dict(d).objective_label == "opd-b"
    assert "objective_label" not in by[("lora", "sft")].to_dict()  # unlabelled plans are unchanged


def test_labelled_sweep_end_to_end_records_and_views(tmp_path, teacher_dir):
    d = {"name": "labels", **TINY, "out": str(tmp_path / "labels"), "seeds": [0],
         "methods": [{"name": "lora", "lr": 1e-2}],
         "objectives": [{"name": "opd", "label": "opd-base", "teacher": "tiny", "max_new_tokens": 4},
                        {"name": "opd", "label": "opd-sharp", "teacher": str(teacher_dir), "max_new_tokens": 4}]}
    p = tmp_path / "labels.yaml"
    p.write_text(yaml.safe_dump(d))
    proc = subprocess.run([sys.executable, "-m", "arena.cli", "sweep", str(p), "--no-progress"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = [json.loads(f.read_text()) for f in sorted((tmp_path / "labels").glob("*/record.json"))]
    assert sorted(r["sweep"]["objective_label"] for r in recs) == ["opd-base", "opd-sharp"]
    res = load_results(tmp_path / "labels")
    assert sorted(res.done["objective"]) == ["opd-base", "opd-sharp"] and set(res.done["objective_name"]) == {"opd"}
    (g,) = objectives_summary(res, reference="opd-base")["groups"]
    assert list(g["summary"]["objective"]) == ["opd-base", "opd-sharp"] and g["pairs"]["vs"].tolist() == ["opd-base"]
