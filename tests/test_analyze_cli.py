"""`arena analyze` and `arena interpolate` on a tiny run: results land in record.json next to the
other keys, and bad input exits 2 with one clear line."""

from __future__ import annotations

import json

import pytest

from arena.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from conftest import tiny_overrides

    from arena.config import load_run_config
    from arena.experiment import run_training

    out = tmp_path_factory.mktemp("analyze") / "run"
    run_training(load_run_config(None, tiny_overrides(method="lora", train__lr=1e-2, train__steps=4, out=str(out))),
                 log=lambda m: None)
    return out


def _cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _user_error(code, out, err, command, *needles):
    assert code == 2, f"exit {code}; stderr: {err}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"arena {command}: error: "), err
    assert "Traceback" not in err and out == ""
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"


def test_analyze_prints_table_and_stores_diagnostics(capsys, run_dir, data_dir):
    args = ["analyze", "--run", str(run_dir), "--max-prompts", "6", "--max-tokens", "300", "--data-dir", str(data_dir)]
    code, out, err = _cli(capsys, *args)
    assert code == 0, err
    assert "L1.q_proj" in out and "L1.down_proj" in out and "CKA G" in out and "cka_general" in out
    rec = json.loads((run_dir / "record.json").read_text())
    assert rec["status"] == "done" and "train" in rec and "probes" in rec  # other keys kept
    diag = rec["diagnostics"]
    assert len(diag["modules"]) == 4 and diag["method"] == "lora"
    assert diag["distributions"]["general"]["tokens"] <= 300 and diag["distributions"]["target"]["prompts"] == 6
    assert 0 < diag["summary"]["cka_general"] < 1 and diag["summary"]["csd_rel_general"] > 0
    assert not diag["distributions"]["general"]["base_cached"]
    # a second analysis (another run of the same sweep would do the same) reads the base side from the cache
    code, out, _ = _cli(capsys, *args, "--modules", "model.layers.1.self_attn.q_proj,layers.1.self_attn.k_proj",
                        "--modules", "layers.1.self_attn.v_proj", "layers.1.mlp.down_proj", "--no-write")
    assert code == 0 and "base activations cached" in out
    assert "stored under" not in out


def test_interpolate_stores_curve(capsys, run_dir, data_dir):
    code, out, err = _cli(capsys, "interpolate", "--run", str(run_dir), "--alphas", "0.5", "--limit", "2",
                          "--data-dir", str(data_dir), "--precision", "fp32")
    assert code == 0, err
    assert "(a) constrained" in out and "(b) knee" in out
    rec = json.loads((run_dir / "record.json").read_text())
    cur = rec["interpolation"]["weights"]
    assert [p["alpha"] for p in cur["points"]] == [0.0, 0.5, 1.0]
    p0 = cur["points"][0]
    assert p0["general"]["n"] == 4 and p0["target"]["n"] == 2 and p0["general"]["delta"] == 0.0
    assert cur["best"]["constrained"]["alpha"] in (0.0, 0.5, 1.0)
    assert rec["status"] == "done"


def test_interpolation_reads_alpha0_from_the_base_cache(capsys, run_dir, data_dir):
    """θ(0) is the base model on every path: a later run of the same base reads its scores from the
    base cache (values equal to the scored ones), and other scorer settings score it afresh."""
    args = ["interpolate", "--run", str(run_dir), "--alphas", "0.5", "--data-dir", str(data_dir), "--precision", "fp32"]
    points = []
    for limit in ("3", "3", "1"):
        code, out, err = _cli(capsys, *args, "--limit", limit)
        assert code == 0, err
        points.append(json.loads((run_dir / "record.json").read_text())["interpolation"]["weights"]["points"])
    assert points[1][0].get("cached") is True
    for axis in ("general", "target"):
        assert points[1][0][axis]["value"] == points[0][0][axis]["value"]
        assert points[1][1][axis]["value"] == points[0][1][axis]["value"]  # α = 0.5 scored, equal by determinism
        assert points[1][1][axis]["delta"] == points[0][1][axis]["delta"]  # paired against the cached units
    assert not points[2][0].get("cached") and points[2][0]["target"]["n"] == 1


@pytest.mark.parametrize("command,extra,needles", [
    ("analyze", ["--modules", "model.layers.9.mlp.down_proj"], ["model.layers.9.mlp.down_proj", "available",
                                                                 "model.layers.0.self_attn.q_proj"]),
    ("analyze", ["--max-tokens", "0"], ["max-tokens", "positive"]),
    # refused once the run is known: the library names interpolation.path, the CLI rewords it as the flag
    ("interpolate", ["--path", "generator"], ["--path: invalid value 'generator'", "boft, oft", "'lora'"]),
    ("interpolate", ["--alphas", "0,half"], ["--alphas"]),
    ("interpolate", ["--alphas", "0,nan"], ["--alphas", "finite"]),
    ("interpolate", ["--suite", "targte"], ["--suite", "did you mean 'target'"]),
    ("interpolate", ["--limit", "0"], ["--limit", "positive"]),
])
def test_bad_input_exits_2(capsys, run_dir, command, extra, needles):
    code, out, err = _cli(capsys, command, "--run", str(run_dir), *extra)
    _user_error(code, out, err, command, *needles)


@pytest.mark.parametrize("command", ["analyze", "interpolate"])
def test_not_a_run_folder_exits_2(capsys, tmp_path, command):
    code, out, err = _cli(capsys, command, "--run", str(tmp_path))
    _user_error(code, out, err, command, "not a run folder")
    code, out, err = _cli(capsys, command, "--run", str(tmp_path / "missing"))
    _user_error(code, out, err, command, "no such folder")


def test_interpolate_with_lm_eval_scores(capsys, run_dir, data_dir):
    """The lm-eval scorer goes through arena.evaluation.evaluate_model (target axis only: fast)."""
    code, out, err = _cli(capsys, "interpolate", "--run", str(run_dir), "--scorer", "lm-eval", "--suite", "target",
                          "--alphas", "0,1", "--limit", "2", "--data-dir", str(data_dir), "--no-write")
    assert code == 0, err
    assert "target score" in out and "higher is better" in out
