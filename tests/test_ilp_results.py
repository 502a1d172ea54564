"""arena.results.ilp on hand-made records and samples: Wilson intervals (checked against scipy),
seeds pooled per run group, cause shares, and mitigation effects paired on the same samples."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from scipy.stats import binomtest

from arena.results.ilp import (cause_table, examples_table, ilp_runs, ilp_summary, mitigation_effects,
                               overlap_table, paired_bootstrap, run_groups, wilson_ci)
from arena.results.load import load_results


def scipy_wilson(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def key(i):
    return hashlib.sha1(f"s{i}".encode()).hexdigest()


def write(root, run_id, *, seed=0, unlearned=(), n=20, keys=None, mitigation=None, rank=8, causes=None,
          forgetting=None, overlaps=None, samples=True, ilp=True):
    """A finished SFT run folder: record.json (+ ilp section) and ilp/samples.jsonl; sample i is
    unlearned when i is in `unlearned`; causes: cause -> (k, tested, missing)."""
    d = root / run_id
    (d / "ilp").mkdir(parents=True)
    keys = list(range(n)) if keys is None else list(keys)
    k = sum(i in unlearned for i in keys)
    cs = {}
    for c, (ck, tested, missing) in (causes or {}).items():
        cs[c] = {"k": ck if tested else None, "share": None, "ci95": None, "tested": tested, "missing": missing,
                 "rule": f"rule {c}", "examples": [{"index": 1, "prompt": f"prompt {c} {run_id}", "reference": "4",
                                                    "prediction": "5", "causes": [c]}] if tested and ck else []}
    rec = {"schema_version": 1, "run_id": run_id, "status": "done",
           "config": {"model": {"name": "m"}, "method": {"name": "lora", "rank": rank},
                      "target": {"name": "arith"}, "objective": {"name": "sft"}, "train": {"seed": seed}},
           "method": {"name": "lora"}, "objective": "sft", "target": "arith",
           "sweep": {"name": "s", "label": "lora", "seed": seed, "status": "complete", "stages": {}}}
    if forgetting is not None:
        rec["eval"] = {"compare": {"forgetting": {"value": forgetting[0], "se": forgetting[1]},
                                   "target_gain": {"value": 0.0, "se": 0.01}}}
    if ilp:
        rec["ilp"] = {"version": 1, "probe": "verify", "n_tested": len(keys),
                      "unlearned": {"k": k, "n": len(keys), "threshold": 0.2, "pass_n": 5, "stable_over": [run_id]},
                      "causes": cs, "overlaps": overlaps or {},
                      "mitigation": {"names": [mitigation], "options": {f"objective.{mitigation}": "x"}} if mitigation else None,
                      "files": {"samples": "ilp/samples.jsonl", "summary": "ilp/summary.json"}}
    (d / "record.json").write_text(json.dumps(rec))
    if samples:
        (d / "ilp" / "samples.jsonl").write_text("".join(
            json.dumps({"index": i, "key": key(i), "unlearned": i in unlearned, "causes": []}) + "\n" for i in keys)
            + '{"index": 99, "key": "cut by a cra')  # a torn last line is skipped
    return d


@pytest.mark.parametrize("k, n", [(0, 10), (1, 10), (3, 20), (8, 40), (31, 256), (40, 40)])
def test_wilson_matches_scipy(k, n):
    assert wilson_ci(k, n) == pytest.approx(scipy_wilson(k, n), abs=1e-6)
    assert all(math.isnan(v) for v in wilson_ci(0, 0))


def test_fractions_causes_and_groups(tmp_path):
    write(tmp_path, "a0", seed=0, unlearned={0, 1, 2},
          causes={"I": (1, True, None), "IV": (0, False, "no checkpoints"), "unexplained": (2, True, None)},
          overlaps={"I+II": 1})
    write(tmp_path, "a1", seed=1, unlearned={0, 1, 2, 3, 4},
          causes={"I": (2, True, None), "IV": (1, True, None), "unexplained": (2, True, None)}, overlaps={"I+II": 2})
    write(tmp_path, "plain", ilp=False)  # no ilp section: not a row
    res = load_results(tmp_path)
    runs = ilp_runs(res).set_index("run_id")
    assert list(runs.index) == ["a0", "a1"]
    assert runs.loc["a0", "fraction"] == pytest.approx(3 / 20)
    assert (runs.loc["a0", "ci_low"], runs.loc["a0", "ci_high"]) == pytest.approx(scipy_wilson(3, 20), abs=1e-6)
    assert runs.loc["a0", "I_share"] == pytest.approx(1 / 3)
    assert (runs.loc["a0", "I_low"], runs.loc["a0", "I_high"]) == pytest.approx(scipy_wilson(1, 3), abs=1e-6)
    assert not runs.loc["a0", "IV_tested"] and math.isnan(runs.loc["a0", "IV_share"])

    (g,) = run_groups(ilp_runs(res)).to_dict("records")
    assert (g["runs"], g["seeds"], g["k"], g["n"], g["mitigation"]) == (2, 2, 8, 40, "none")
    assert (g["ci_low"], g["ci_high"]) == pytest.approx(scipy_wilson(8, 40), abs=1e-6)
    assert (g["fraction_min"], g["fraction_max"]) == (3 / 20, 5 / 20)

    ct = cause_table(res).set_index("cause")
    assert (ct.loc["I", "k"], ct.loc["I", "unlearned"]) == (3, 8)
    assert (ct.loc["I", "ci_low"], ct.loc["I", "ci_high"]) == pytest.approx(scipy_wilson(3, 8), abs=1e-6)
    # IV was tested in one run only: its share is over that run's unlearned samples, and the other's reason kept
    assert (ct.loc["IV", "tested_runs"], ct.loc["IV", "k"], ct.loc["IV", "unlearned"]) == (1, 1, 5)
    assert ct.loc["IV", "missing"] == "no checkpoints" and ct.loc["I", "rule"] == "rule I"
    assert ct.loc["I", "example_prompt"] == "prompt I a0"
    assert math.isnan(ct.loc["III", "share"]) and ct.loc["III", "tested_runs"] == 0  # not in the records at all
    ov = overlap_table(res)
    assert ov[["causes", "count"]].values.tolist() == [["I+II", 3]]
    ex = examples_table(res)
    assert set(ex["cause"]) == {"I", "IV", "unexplained"} and set(ex["run_id"]) == {"a0", "a1"}


def test_mitigation_effect_paired_on_shared_samples(tmp_path):
    # seed 0: baseline unlearns 0..9 of 40; the mitigation 0..3 (6 fewer) and tests 5 extra samples
    write(tmp_path, "base0", seed=0, n=40, unlearned=set(range(10)), forgetting=(0.10, 0.02))
    write(tmp_path, "mit0", seed=0, keys=range(45), unlearned=set(range(4)) | {41, 42}, mitigation="bucketing",
          forgetting=(0.13, 0.02))
    # seed 1: baseline 0..7, the mitigation 0..5 and 30 (a sample the baseline learned)
    write(tmp_path, "base1", seed=1, n=40, unlearned=set(range(8)), forgetting=(0.12, 0.02))
    write(tmp_path, "mit1", seed=1, n=40, unlearned=set(range(6)) | {30}, mitigation="bucketing",
          forgetting=(0.11, 0.02))
    write(tmp_path, "r16", seed=0, n=40, unlearned={1}, rank=16, mitigation="bucketing")  # no baseline of its own
    res = load_results(tmp_path)

    pairs = mitigation_effects(res, per="pair", n_boot=4000).set_index("runs")
    p0 = pairs.loc["mit0"]
    assert p0["baselines"] == "base0" and p0["n"] == 40  # the 5 samples only the mitigation tested are left out
    assert p0["effect"] == pytest.approx(-6 / 40) and p0["baseline"] == pytest.approx(10 / 40)
    assert p0["mitigated"] == pytest.approx(4 / 40)
    assert p0["ci_low"] < -6 / 40 < p0["ci_high"] < 0 and p0["beyond_noise"]
    assert p0["d_forgetting"] == pytest.approx(0.03) and p0["d_forgetting_se"] == pytest.approx(math.hypot(0.02, 0.02))
    assert pairs.loc["mit1", "effect"] == pytest.approx((-2 + 1) / 40)
    r16 = pairs.loc["r16"]
    assert r16["n"] == 0 and math.isnan(r16["effect"]) and not r16["beyond_noise"] and "no baseline" in r16["note"]

    eff = mitigation_effects(res, n_boot=4000)
    pooled = eff[eff["runs"] == "mit0,mit1"].iloc[0]
    assert (pooled["pairs"], pooled["n"], pooled["label"]) == (2, 80, "lora")
    assert pooled["effect"] == pytest.approx((-6 - 1) / 80)
    d_f = [0.03, -0.01]
    assert pooled["d_forgetting"] == pytest.approx(np.mean(d_f))
    assert pooled["d_forgetting_se"] == pytest.approx(np.std(d_f, ddof=1) / math.sqrt(2))  # over seeds
    assert mitigation_effects(res, n_boot=4000).equals(eff)  # seeded: the same interval every time


def test_missing_samples_file_is_a_note_not_an_error(tmp_path):
    write(tmp_path, "base0", unlearned={1})
    write(tmp_path, "mit0", unlearned=set(), mitigation="order", samples=False)
    (row,) = mitigation_effects(load_results(tmp_path)).to_dict("records")
    assert row["n"] == 0 and "mit0" in row["note"] and "samples.jsonl" in row["note"]


def test_paired_bootstrap_against_the_normal_interval():
    rng = np.random.default_rng(1)
    d = rng.choice([-1.0, 0.0, 0.0, 1.0], size=400, p=[0.3, 0.25, 0.25, 0.2])
    lo, hi = paired_bootstrap([d], n_boot=5000, seed=3)
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert lo == pytest.approx(d.mean() - half, abs=0.01) and hi == pytest.approx(d.mean() + half, abs=0.01)
    assert paired_bootstrap([np.full(10, -1.0)]) == (-1.0, -1.0)  # no spread, no interval
    assert paired_bootstrap([d], seed=3) == paired_bootstrap([d], seed=3) != paired_bootstrap([d], seed=4)
    assert all(math.isnan(v) for v in paired_bootstrap([]))


def test_no_ilp_and_one_run_folder(tmp_path):
    write(tmp_path, "plain", ilp=False)
    assert ilp_summary(load_results(tmp_path)) is None
    run = write(tmp_path, "base0", unlearned={1, 2})
    write(tmp_path, "mit0", unlearned={1}, mitigation="order")
    s = ilp_summary(load_results(run))  # a lone run folder: its samples path is relative to the folder itself
    assert len(s["runs"]) == 1 and s["effects"].empty
    assert ilp_summary(load_results(tmp_path))["effects"]["effect"].iloc[0] == pytest.approx(-1 / 20)
