"""`arena ilp`: the MC conversion, pass@N, the cause rules, the intervals, and the command end to end."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from arena.cli import main
from arena.errors import ArenaError, ConfigError
from arena.ilp import causes, mc
from arena.ilp.run import pick_tested, sample_key
from arena.ilp.summary import mitigation_of
from arena.ilp.settings import IlpSettings
from arena.ilp.stats import jsd_bits, wilson
from arena.targets.base import Example

# -- the MC form -------------------------------------------------------------------------------------


def test_continuation_swaps_only_the_stated_answer():
    arith = Example("What is 12 + 0?", "12 + 0 = 12", answer="12")
    assert mc.continuation(arith, "7") == "12 + 0 = 7"  # the last "12", a whole token, not the operand
    assert mc.continuation(arith, "12") == "12 + 0 = 12"
    med = Example("Q?\n\nA. x\nB. y", "Because y is the cause.\nThe answer is B.", answer="B")
    assert mc.continuation(med, "C") == "The answer is C."  # the explanation is not scored
    bare = Example("Q?", "no answer stated here", answer="D")
    assert mc.continuation(bare, "A") == "A"
    free = Example("Tell me.", "A whole free-form reply.")
    assert mc.continuation(free, "Another sample's reply.") == "Another sample's reply."


def test_items_draw_distractors_from_the_same_subset_and_are_seeded():
    exs = ([Example(f"m{i}", f"The answer is {L}.", answer=L, meta={"source": "mcq"}) for i, L in enumerate("ABCDAB")]
           + [Example(f"p{i}", f"The answer is {w}.", answer=w, meta={"source": "yn"}) for i, w in enumerate(["yes", "no", "maybe"])])
    pools = mc.distractor_pools(exs)
    assert pools == {"mcq": ["A", "B", "C", "D"], "yn": ["yes", "no", "maybe"]}
    keys = [sample_key(e) for e in exs]
    items = mc.build_items(exs, pools, candidates=8, options=3, n=5, seed=0, keys=keys)
    assert items[0].answers[0] == "A" and set(items[0].answers) == {"A", "B", "C", "D"}
    assert set(items[6].answers) == {"yes", "no", "maybe"}  # never a letter for a yes/no question
    for it in items:
        assert len(it.trials) == 5 and all(t[0] == 0 and len(t) == 3 and len(set(t)) == 3 for t in it.trials)
    again = mc.build_items(exs, pools, candidates=8, options=3, n=5, seed=0, keys=keys)
    assert [i.answers for i in again] == [i.answers for i in items] and [i.trials for i in again] == [i.trials for i in items]
    other = mc.build_items(exs, pools, candidates=8, options=3, n=5, seed=1, keys=keys)
    assert [i.trials for i in other] != [i.trials for i in items]
    lone = [Example("q", "The answer is A.", answer="A", meta={"source": "s"})]
    with pytest.raises(ArenaError, match="no multiple-choice distractor"):
        mc.build_items(lone, mc.distractor_pools(lone), 4, 2, 1, 0, ["k"])


def test_mc_pass_counts_trials_where_the_reference_wins_and_ties_lose():
    item = mc.McItem("p", ["r", "a", "b", "c"], ["r", "a", "b", "c"], trials=[[0, 1, 3], [0, 2, 3], [0, 1, 2]])
    assert mc.mc_pass(item, [-1.0, -2.0, -0.5, -3.0]) == pytest.approx(1 / 3)
    assert mc.mc_pass(item, [-1.0, -1.0, -5.0, -5.0]) == pytest.approx(1 / 3)  # the tie with "a" is a loss
    assert mc.softmax([0.0, math.log(3.0)]) == pytest.approx([0.25, 0.75])


def test_score_items_ranks_the_answer_the_model_prefers(tiny_base):
    import torch

    model, tok = tiny_base
    ex = Example("What is 2 + 2?", "2 + 2 = 4", answer="4", meta={"source": "s"})
    item = mc.McItem(ex.prompt, ["4", "5"], [mc.continuation(ex, "4"), mc.continuation(ex, "5")], [[0, 1]])
    ll = mc.score_items(model, tok, [item], torch.device("cpu"), "fp32", batch_size=2)[0]
    # the same forward by hand: log P("2 + 2 = 5<|im_end|>..." | prompt) summed over the response tokens
    from arena.evaluation.model_io import per_example_nll

    by_hand = per_example_nll(model, tok, [SimpleNamespace(prompt=ex.prompt, response="2 + 2 = 5")],
                              torch.device("cpu"), "fp32")[0][0]
    assert ll[1] == pytest.approx(-by_hand, rel=1e-5)
    assert ll[0] != ll[1]


# -- intervals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("k,n", [(0, 10), (3, 40), (31, 256), (20, 20)])
def test_wilson_matches_scipy(k, n):
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(k, n) == pytest.approx([ci.low, ci.high], abs=1e-5)
    assert wilson(0, 0) is None


def test_jsd_bits_bounds():
    assert jsd_bits([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
    assert jsd_bits([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    # hand value: p=(0.75,0.25), q=(0.25,0.75): m=(0.5,0.5), JSD = 1 - H2(0.75) = 0.188722...
    assert jsd_bits([0.75, 0.25], [0.25, 0.75]) == pytest.approx(1 - (-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))))


# -- the cause rules ---------------------------------------------------------------------------------

S = IlpSettings()


def _traj(*points):
    return [{"step": s, "mc_pass": p, "nll": nll} for s, p, nll in points]


def test_rule_i_base_cannot_and_no_similar_sample_learned():
    ev = {"base_mc_pass": 0.0, "learned_neighbours": []}
    assert causes.cause_i(ev, S) is True
    assert causes.cause_i({**ev, "learned_neighbours": [3]}, S) is False
    assert causes.cause_i({**ev, "base_mc_pass": 0.4}, S) is False
    assert causes.cause_i({"base_mc_pass": 0.0}, S) is None


def test_rule_ii_confident_base_error_that_sft_did_not_move():
    ev = {"base_top": {"answer": "blue", "prob": 0.9, "correct": False}, "tuned_top": "blue", "jsd": 0.5,
          "base_mc_pass": 0.0, "learned_neighbours": [7]}
    assert causes.cause_ii(ev, S) is True
    assert causes.cause_ii({**ev, "tuned_top": "green"}, S) is True  # moved to another wrong answer: still the prior
    assert causes.cause_ii({**ev, "base_top": {"answer": "red", "prob": 0.9, "correct": True}}, S) is False
    assert causes.cause_ii({**ev, "base_top": {"answer": "blue", "prob": 0.3, "correct": False}}, S) is False  # unsure
    assert causes.cause_ii({**ev, "learned_neighbours": []}, S) is False  # nothing near is known: a guess (cause I)
    assert causes.cause_ii(ev, IlpSettings(ii_jsd_max=0.3)) is False  # the optional JSD cap
    taught = {**ev, "conflicts": [{"index": 2, "similarity": 0.95, "answer": "blue"}]}
    assert causes.cause_ii(taught, S) is False  # the data contradict it themselves: III
    assert causes.cause_ii({**taught, "conflicts": [{"index": 2, "similarity": 0.95, "answer": "red"}]}, S) is False
    lost = {**ev, "checkpoints": _traj((10, 0.8, 0.2), (20, 0.0, 1.0))}
    assert causes.cause_ii(lost, S) is False  # learned at step 10, then lost: forgetting (IV)
    assert causes.cause_ii({"jsd": 0.1}, S) is None


def test_rule_iii_near_duplicate_with_another_answer():
    assert causes.cause_iii({"conflicts": [{"index": 4, "similarity": 0.97, "answer": "x"}]}, S) is True
    assert causes.cause_iii({"conflicts": []}, S) is False
    assert causes.cause_iii({}, S) is None


def test_rule_iv_early_learned_then_lost_confirmed_by_reversal():
    ev = {"steps": 100, "first_seen": 10, "last_seen": 20,
          "checkpoints": _traj((25, 0.8, 0.5), (50, 0.4, 1.0), (100, 0.0, 2.0)), "reversed_pass": 0.8}
    assert causes.cause_iv(ev, S) is True
    assert causes.cause_iv({**ev, "first_seen": 70, "last_seen": 70}, S) is False  # seen late: not left-side
    assert causes.cause_iv({**ev, "last_seen": 90}, S) is False  # trained on again late: not left-side
    assert causes.cause_iv({**ev, "reversed_pass": 0.0}, S) is False  # the reversed run does not keep it either
    assert causes.cause_iv({**ev, "reversed_pass": None}, S) is True  # no control: the other conditions decide
    never = {**ev, "checkpoints": _traj((25, 0.2, 2.0), (50, 0.4, 1.0), (100, 0.0, 2.0))}
    assert causes.cause_iv(never, S) is False  # never learned: nothing was forgotten
    assert causes.cause_iv({**ev, "checkpoints": None}, S) is None


def test_rule_v_loss_still_falling_and_learned_when_longer():
    ev = {"checkpoints": _traj((50, 0.0, 2.0), (100, 0.0, 1.5)), "longer_pass": 0.8, "last_seen": 90}
    # a last checkpoint two steps before the end is skipped: the segment starts at the one before
    near_end = {**ev, "last_seen": 120, "checkpoints": _traj((33, 0.0, 3.0), (66, 0.0, 2.0), (99, 0.0, 1.6), (132, 0.0, 1.52),
                                           (134, 0.0, 1.5))}
    assert causes.cause_v(near_end, S) is True  # 1.6 -> 1.5 (6%), not 1.52 -> 1.5 (1%)
    assert causes.cause_v({**near_end, "last_seen": 98}, S) is False
    assert causes.cause_v(ev, S) is True
    assert causes.cause_v({**ev, "longer_pass": 0.0}, S) is False
    assert causes.cause_v({**ev, "last_seen": 40}, S) is False  # not trained on in the last segment: drift
    assert causes.cause_v({**ev, "last_seen": None}, S) is False
    no_order = {k: v for k, v in ev.items() if k != "last_seen"}
    assert causes.cause_v(no_order, S) is True
    flat = {**ev, "checkpoints": _traj((50, 0.0, 2.0), (100, 0.0, 1.99))}
    assert causes.cause_v(flat, S) is False
    assert causes.cause_v({"checkpoints": _traj((100, 0.0, 2.0))}, S) is None


def test_attribute_reports_every_matching_cause():
    ev = {"base_mc_pass": 0.0, "learned_neighbours": [], "conflicts": [{"index": 1, "similarity": 1.0, "answer": "b"}],
          "base_top": {"answer": "b", "prob": 0.2, "correct": False}, "tuned_top": "b", "jsd": 0.0}
    found, verdicts = causes.attribute(ev, S, ["I", "II", "III", "IV"])
    assert found == ["I", "III"] and verdicts == {"I": True, "II": False, "III": True, "IV": None}


def test_settings_reject_bad_values():
    with pytest.raises(ConfigError, match="ilp.causes"):
        IlpSettings(causes=["VI"])
    with pytest.raises(ConfigError, match="ilp.candidates"):
        IlpSettings(options=5, candidates=4)
    with pytest.raises(ConfigError, match="ilp.threshold"):
        IlpSettings(threshold=0)
    with pytest.raises(ConfigError, match="ilp.controls"):
        IlpSettings(controls=["shorter"])


def test_pick_tested_does_not_depend_on_the_data_order():
    exs = [Example(f"q{i}", f"r{i}", answer=str(i)) for i in range(50)]
    keys = [sample_key(e) for e in exs]
    a = {keys[i] for i in pick_tested(exs, keys, 10, 0, [True] * 50)}
    perm = list(range(50))
    random.Random(3).shuffle(perm)
    exs2 = [exs[i] for i in perm]
    keys2 = [sample_key(e) for e in exs2]
    b = {keys2[i] for i in pick_tested(exs2, keys2, 10, 0, [True] * 50)}
    assert a == b and len(a) == 10
    assert {keys[i] for i in pick_tested(exs, keys, 10, 1, [True] * 50)} != a


# -- the command -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arith_run(tmp_path_factory, tiny_run_config):
    """A tiny LoRA SFT run on arith with two intermediate checkpoints kept."""
    from arena.experiment import run_training

    out = tmp_path_factory.mktemp("ilp") / "run"
    cfg = tiny_run_config(out=str(out), method="lora", target="arith", target__n_train=120, train__steps=9,
                          train__save_every=3, train__keep_checkpoints=0, train__lr=1e-2, probe__heldout=0)
    run_training(cfg, log=lambda m: None)
    return out


def test_arena_ilp_end_to_end(arith_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(arith_run, run)
    assert main(["ilp", "--run", str(run), "--samples", "24", "--n", "3", "--controls", "longer"]) == 0
    out = capsys.readouterr().out
    assert "unlearned:" in out and "cause" in out
    rows = [json.loads(x) for x in (run / "ilp" / "samples.jsonl").read_text().splitlines()]
    summary = json.loads((run / "ilp" / "summary.json").read_text())
    record = json.loads((run / "record.json").read_text())
    assert record["ilp"] == summary and record["status"] == "done"  # the rest of the record is kept
    assert len(rows) == summary["n_tested"] == 24 and summary["probe"] == "verify"
    k = sum(r["unlearned"] for r in rows)
    assert summary["unlearned"]["k"] == k and summary["unlearned"]["ci95"] == wilson(k, 24)
    for c in ("I", "II", "III", "V"):
        assert summary["causes"][c]["k"] == sum(c in r["causes"] for r in rows if r["unlearned"])
    assert summary["causes"]["unexplained"]["k"] == sum(not r["causes"] for r in rows if r["unlearned"])
    assert all(not r["causes"] for r in rows if not r["unlearned"])  # causes explain unlearned samples only
    assert (run / "ilp" / "controls" / "longer" / "final").is_dir() and summary["controls"] == {"longer": "ilp/controls/longer"}
    traj = rows[0]["evidence"]["checkpoints"]
    assert [p["step"] for p in traj] == [3, 6, 9]  # the kept checkpoints, then the final weights
    assert summary["mitigation"] is None
    # only samples the run trained on are re-tested; IV reads when each was first seen
    assert all(1 <= r["evidence"]["first_seen"] <= 9 for r in rows) and summary["causes"]["IV"]["tested"]
    # the rules re-applied from the stored evidence: the same settings give the same attribution, a rule
    # threshold may change, a measured setting may not (exit 2, nothing rewritten)
    assert main(["ilp", "--run", str(run), "--samples", "24", "--n", "3", "--controls", "longer", "--reattribute"]) == 0
    same = json.loads((run / "ilp" / "summary.json").read_text())
    assert {c: v["k"] for c, v in same["causes"].items()} == {c: v["k"] for c, v in summary["causes"].items()}
    assert main(["ilp", "--run", str(run), "--samples", "24", "--n", "3", "--controls", "longer", "--reattribute",
                 "--causes", "III", "--i-base-max", "0"]) == 0
    only = json.loads((run / "ilp" / "summary.json").read_text())
    assert set(only["causes"]) == {"III", "unexplained"} and only["unlearned"] == same["unlearned"]
    assert json.loads((run / "record.json").read_text())["ilp"] == only
    capsys.readouterr()
    assert main(["ilp", "--run", str(run), "--samples", "24", "--n", "4", "--reattribute"]) == 2
    assert "differ from the measured run" in capsys.readouterr().err
    assert json.loads((run / "ilp" / "summary.json").read_text()) == only
    # back to the full attribution for the checks below
    assert main(["ilp", "--run", str(run), "--samples", "24", "--n", "3", "--controls", "longer", "--reattribute"]) == 0
    capsys.readouterr()
    # same run, same settings -> the same answers (seeded sampling and MC trials); --no-write writes nothing
    again = tmp_path / "again"
    shutil.copytree(run, again)
    (again / "ilp" / "samples.jsonl").unlink(missing_ok=True)
    before = (again / "record.json").read_text()
    assert main(["ilp", "--run", str(again), "--samples", "24", "--n", "3", "--controls", "longer", "--no-write",
                 "--json"]) == 0
    repeat = json.loads(capsys.readouterr().out)
    drop = lambda u: {k: v for k, v in u.items() if k != "stable_over"}  # noqa: E731 (names the folder)
    assert drop(repeat["unlearned"]) == drop(summary["unlearned"]) and repeat["controls"] == summary["controls"]
    assert {c: v["k"] for c, v in repeat["causes"].items()} == {c: v["k"] for c, v in summary["causes"].items()}
    assert not (again / "ilp" / "samples.jsonl").exists() and (again / "record.json").read_text() == before


def _grpo_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    cfg = yaml.safe_load((dst / "config.yaml").read_text())
    cfg["objective"] = {"name": "grpo"}
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg))
    return dst


def _assert_untouched(run: Path, before: str, capsys, needle: str):
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (run / "ilp").exists() and (run / "record.json").read_text() == before


def test_bad_input_exits_2_and_writes_nothing(arith_run, tmp_path, capsys):
    grpo = _grpo_copy(arith_run, tmp_path / "grpo")
    before = (grpo / "record.json").read_text()
    assert main(["ilp", "--run", str(grpo)]) == 2
    _assert_untouched(grpo, before, capsys, "analyses SFT runs")

    nock = tmp_path / "nock"
    shutil.copytree(arith_run, nock)
    shutil.rmtree(nock / "checkpoints")
    before = (nock / "record.json").read_text()
    assert main(["ilp", "--run", str(nock), "--causes", "I,IV"]) == 2
    _assert_untouched(nock, before, capsys, "cause IV needs the run's checkpoints")

    assert main(["ilp", "--run", str(nock), "--causes", "VI"]) == 2
    _assert_untouched(nock, before, capsys, "--causes")
    assert main(["ilp", "--run", str(nock), "--samples", "many"]) == 2
    _assert_untouched(nock, before, capsys, "--samples")
    assert main(["ilp", "--run", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_target_with_neither_verifier_nor_mc_answers_is_refused(arith_run, tmp_path, capsys, monkeypatch):
    from arena.components import TARGETS
    from arena.targets.arith import ArithTarget

    class OneAnswer(ArithTarget):
        default_reward = None
        ilp_probe = "mc"

        def train_examples(self, seed):
            return [Example(f"Say yes {i}.", "yes", answer="yes", meta={"source": "s"}) for i in range(20)]

    TARGETS.discover()
    monkeypatch.setitem(TARGETS._items, "arith", OneAnswer)
    run = tmp_path / "one"
    shutil.copytree(arith_run, run)
    before = (run / "record.json").read_text()
    assert main(["ilp", "--run", str(run), "--probe", "verify"]) == 2
    _assert_untouched(run, before, capsys, "needs a verifier")
    assert main(["ilp", "--run", str(run)]) == 2
    _assert_untouched(run, before, capsys, "no subset has two different answers")


def test_mitigation_of_names_the_options_a_run_changed(tiny_run_config):
    assert mitigation_of(tiny_run_config()) is None
    m = mitigation_of(tiny_run_config("objective.bucketing=conflicts", "objective.resample_every=5"))
    assert m == {"names": ["bucketing", "resample"],
                 "options": {"objective.bucketing": "conflicts", "objective.resample_every": 5}}
