"""Targets and data readers, on the real benchmark files (skipped when absent) and tiny synthetic ones.

Expected values were read off the files by hand (see each test), not computed by the code under test.
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
from pathlib import Path

import pytest
from doc_examples import import_doc_module, write_doc_file

from arena.data import (
    data_file,
    normalize_text,
    read_json,
    read_jsonl,
    sha256_file,
    stable_shuffle,
    stratified_subset,
)
from arena.errors import ConfigError, DataError
from arena.evaluation.tasks import TASKS
from arena.rewards import resolve_reward
from arena.schema import build
from arena.components import TARGETS
from arena.targets.base import Example
from arena.targets.answers import ANSWER_FORMATS, answers_match
from arena.targets.arith import ArithTarget, problem_space
from arena.targets.base import FileTarget
from arena.targets.math import last_boxed, parse_gsm8k_answer
from arena.targets.medical import cop_to_letter


def _find_data_dir() -> Path | None:
    env = os.environ.get("ARENA_DATA_DIR")
    cand = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return cand if (cand / "gsm8k" / "test.jsonl").is_file() else None


DATA = _find_data_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="real data folder not found: set ARENA_DATA_DIR or place shared/data beside the repo")


def make(name: str, data_dir=DATA, **options):
    cls = TARGETS.get(name)
    return cls(build(cls.Options, options, prefix="target"), str(data_dir) if data_dir else None)


# ---------------------------------------------------------------- registry-wide contract

def test_registry_has_the_three_targets():
    assert {"math", "medical", "arith"} <= set(TARGETS.names())


def _needs_files(name: str) -> bool:
    return issubclass(TARGETS.get(name), FileTarget)


def check_target_contract(t) -> None:
    """What every target promises (a new target passes this to be picked up everywhere)."""
    t.check_data()
    held = t.heldout_examples(6, seed=0)
    assert held == t.heldout_examples(6, seed=0)
    assert len(held) == 6 and all(isinstance(e, Example) and e.prompt and e.response and e.answer for e in held)
    assert all(n in TASKS for n in t.eval_tasks())
    if not t.eval_tasks():  # a target without benchmarks says so when its suite is asked for
        from arena.evaluation.suites import target_tasks

        with pytest.raises(ConfigError, match="has no benchmarks of its own"):
            target_tasks(t)
    d = t.describe()
    assert "error" not in d and d["train"]["size"] > 0 and d["heldout"]["pool"] > 0
    json.dumps(d)  # describe() goes into JSON run records
    # its default reward gives the reference responses full marks, and its answer format reads them
    name, reward = resolve_reward("auto", t.name)
    assert name == t.default_reward
    read = ANSWER_FORMATS.get(t.answer_format)
    for e in held:
        assert reward(e.response, e.answer) == 1.0, (e.response, e.answer)
        assert answers_match(read(e.response), e.answer), (e.response, e.answer)
    for conv in t.conversions.values():  # conversions read files of the data folder, and map them
        paths = [data_file(t.data_dir, rel) for rel in conv.sources.values()]
        rows = conv.records(*paths)
        assert rows and all(isinstance(r, dict) for r in rows)


@pytest.mark.parametrize("name", TARGETS.names())
def test_target_contract(name):
    if _needs_files(name) and DATA is None:
        pytest.skip("real data folder not found")
    check_target_contract(make(name))


@pytest.fixture
def documented_target(tmp_path, monkeypatch):
    """The letters example of docs/extending.md: its module imported from a temporary folder and
    its task file loaded, into copies of TARGETS and TASKS (restored after the test)."""
    from arena.evaluation.tasks import load_task_file, register

    monkeypatch.setattr(TARGETS, "_items", dict(TARGETS._items))
    monkeypatch.setattr(TASKS, "_items", dict(TASKS._items))
    import_doc_module("# arena/targets/letters.py", tmp_path, monkeypatch)
    register(load_task_file(write_doc_file("# arena/evaluation/taskdefs/letters.yaml", tmp_path / "letters.yaml",
                                           lang="yaml")))
    return "letters"


def test_the_documented_target_end_to_end(documented_target, tmp_path):
    """docs/extending.md's walk-through: one target module (and its benchmark's task file) is all
    it takes to train on, probe, reward and evaluate a new target."""
    from conftest import tiny_overrides
    from lm_eval.filters.extraction import RegexFilter

    from arena.config import load_run_config
    from arena.evaluation.runner import plan
    from arena.evaluation.settings import RunSettings
    from arena.evaluation.suites import resolve_tasks
    from arena.experiment import run_training

    name = documented_target
    assert name in TARGETS.names() and TARGETS.get(name).name == name
    t = make(name, data_dir=None)
    check_target_contract(t)  # includes: every held-out reference response scores 1.0 under `arith`
    held = t.heldout_examples(200, seed=0)
    train = {(e.meta["word"], e.meta["letter"]) for e in t.train_examples(0)}
    assert len(train) == 2000 and not train & {(e.meta["word"], e.meta["letter"]) for e in held}
    e = held[0]  # the documented shape: the count of the letter, after the last '='
    assert e.answer == str(e.meta["word"].count(e.meta["letter"])) and e.response.endswith(f"= {e.answer}")
    assert resolve_reward("auto", name)[0] == "arith"
    assert resolve_tasks([name]) == {"target": ["letters"]}
    with pytest.raises(ConfigError, match="target.n_train"):
        build(TARGETS.get(name).Options, {"alphabet": 2, "length": 2, "n_train": 5}, prefix="target")

    # its benchmark builds through lm-eval on the held-out stream, and the filter reads the count
    built = plan(["letters"], None, RunSettings(limit=4), target=t)
    task = built["tasks"]["letters"]
    docs = task.eval_docs
    ref = t.heldout_examples(500, 0)
    assert len(docs) == 500 and len(built["samples"]["letters"]) == 4
    assert (task.doc_to_text(docs[0]), docs[0]["answer"]) == (ref[0].prompt, ref[0].answer)
    spec = task.config.filter_list[0]["filter"][0]
    flt = RegexFilter(regex_pattern=spec["regex_pattern"], group_select=spec["group_select"])
    assert list(flt.apply([[ref[0].response]], [docs[0]]))[0][0] == ref[0].answer
    assert task.config.generation_kwargs["max_gen_toks"] == 32

    # and a run of the tiny model trains on it and probes it (held-out NLL and greedy answers)
    out = tmp_path / "run"
    record = run_training(load_run_config(None, tiny_overrides("probe.greedy=2", target=name, train__steps=2,
                                                               out=str(out))), log=lambda m: None)
    assert record["status"] == "done" and (out / "final").is_dir()
    assert record["target"] == name and record["data"]["examples"] == 256  # TINY_DEFAULTS: target.n_train=256
    tuned = record["probes"]["tuned"]
    assert math.isfinite(tuned["target_nll"]["nll"]) and tuned["greedy"]["n"] == 2


# ---------------------------------------------------------------- io

def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"question": "a", "answer": "#### 1"}\n\n{"question": "b", "answer": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl: line 3 is not valid JSON"):
        read_jsonl(p)


def test_missing_field_is_named(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"question": "a", "answer": "#### 1"}\n{"question": "b"}\n')
    with pytest.raises(DataError, match=r"x\.jsonl: line 2: missing field 'answer'"):
        read_jsonl(p, required_fields=("question", "answer"))


def test_non_object_line_and_bad_json_file(tmp_path):
    (tmp_path / "a.jsonl").write_text("[1, 2]\n")
    with pytest.raises(DataError, match="line 1: expected a JSON object"):
        read_jsonl(tmp_path / "a.jsonl")
    (tmp_path / "b.json").write_text('{"1": ')
    with pytest.raises(DataError, match=r"b\.json: not valid JSON"):
        read_json(tmp_path / "b.json")


def test_missing_file_and_missing_data_dir_say_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="ARENA_DATA_DIR"):
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no data folder: set ARENA_DATA_DIR"):
        data_file(None, "gsm8k/train.jsonl")
    with pytest.raises(DataError, match="ARENA_DATA_DIR"):
        make("math", data_dir=None).check_data()
    with pytest.raises(DataError, match="ARENA_DATA_DIR"):
        make("medical", data_dir=None).train_examples(0)


def test_check_data_names_the_exact_missing_file(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n')
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "gsm8k" / "test.jsonl"))):
        make("math", data_dir=tmp_path).check_data()
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "medmcqa" / "dev.json"))):
        make("medical", data_dir=tmp_path).check_data()
    assert "error" in make("math", data_dir=tmp_path).describe()  # describe degrades, never crashes


@needs_data
def test_sha256_matches_provenance():
    # Value copied from PROVENANCE.md.
    expected = "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"
    assert sha256_file(DATA / "gsm8k" / "test.jsonl") == expected
    assert sha256_file(DATA / "gsm8k" / "test.jsonl") == expected  # cached path


def test_stable_shuffle_is_pinned_and_pure():
    items = list(range(10))
    # Pinned: a change here silently changes every run's training subset.
    assert stable_shuffle(items, 0) == [9, 4, 0, 5, 2, 7, 1, 3, 6, 8]
    assert items == list(range(10))
    assert stable_shuffle(items, 1) != stable_shuffle(items, 0)


def test_stratified_subset_is_proportional_and_not_the_first_n():
    items = [("yes", i) for i in range(276)] + [("no", i) for i in range(169)] + [("maybe", i) for i in range(55)]
    sub = stratified_subset(items, lambda x: x[0], 50, seed=3)
    counts = collections.Counter(lbl for lbl, _ in sub)
    assert counts == {"yes": 28, "no": 17, "maybe": 5}  # 27.6, 16.9, 5.5 by largest remainder
    assert sub == stratified_subset(items, lambda x: x[0], 50, seed=3)
    assert sub != items[:50] and sub != stratified_subset(items, lambda x: x[0], 50, seed=4)
    assert len(stratified_subset(items, lambda x: x[0], 10_000, seed=3)) == len(items)


# ---------------------------------------------------------------- math

def test_gsm8k_answer_parsing_synthetic():
    steps, n = parse_gsm8k_answer("It costs 2 * 540 = <<2*540=1080>>1,080 dollars.\n#### 1,080")
    assert (steps, n) == ("It costs 2 * 540 = 1,080 dollars.", "1080")
    assert parse_gsm8k_answer("x\n#### -7")[1] == "-7"
    with pytest.raises(ValueError, match="####"):
        parse_gsm8k_answer("no marker 5")
    with pytest.raises(ValueError, match="not a number"):
        parse_gsm8k_answer("#### five")


@needs_data
def test_gsm8k_real_record_hand_checked():
    # gsm8k/test.jsonl line 7: Seattle 20 sheep, Charleston 4*20 = 80, Toulouse 2*80 = 160; total 260.
    rec = read_jsonl(DATA / "gsm8k" / "test.jsonl")[6]
    assert rec["question"].startswith("Toulouse has twice as many sheep")
    steps, n = parse_gsm8k_answer(rec["answer"])
    assert n == "260" and "<<" not in steps and "####" not in steps
    held = make("math").heldout_examples(2000, seed=0)
    ex = next(e for e in held if e.prompt.startswith("Toulouse has twice"))
    assert ex.answer == "260" and ex.response.endswith("The answer is 260.") and "<<" not in ex.response


@needs_data
def test_math_train_seeded_capped_and_disjoint_from_heldout():
    t = make("math")
    a, b = t.train_examples(0), t.train_examples(0)
    assert a == b and len(a) == 2000 and a != t.train_examples(1)
    full = make("math", max_train_examples=None).train_examples(0)
    assert len(full) == 7473
    train_q = {normalize_text(e.prompt) for e in full}
    assert not train_q & {normalize_text(e.prompt) for e in t.heldout_examples(2000, seed=0)}


@needs_data
def test_math_extra_excludes_math500():
    t = make("math", include_math_extra=True, max_train_examples=None)
    extra = [e for e in t.train_examples(0) if e.meta["source"] == "math_extra"]
    assert len(extra) == 4500
    m500 = {normalize_text(r["problem"]) for r in read_jsonl(DATA / "math" / "math500" / "test.jsonl")}
    assert not m500 & {normalize_text(e.prompt) for e in extra}
    assert all(e.answer for e in extra)


@pytest.mark.parametrize("text,expected", [
    (r"so $x = \boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    (r"the answer is $\boxed 5$.", "5"),
    (r"first \boxed{1}, then \boxed{2}", "2"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
    (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"\fbox{7}", "7"),
    (r"\boxed{unclosed \frac{1}{2}", None),
    ("no box here", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


# ---------------------------------------------------------------- medical

@needs_data
def test_medmcqa_cop_is_one_based():
    # medmcqa/dev.json record 0 ("...not true for myelinated nerve fibers") has cop 1 -> option a -> "A";
    # record 1 has cop 1 and its explanation begins "Ans-a".
    raw = read_jsonl(DATA / "medmcqa" / "dev.json")
    assert raw[0]["cop"] == 1 and raw[0]["opa"].startswith("Impulse through myelinated")
    by_line = {e.meta["line"]: e for e in make("medical", max_train_examples=None).train_examples(0)
               if e.meta["source"] == "medmcqa_dev"}
    assert by_line[1].answer == "A" and by_line[1].response == "The answer is A."
    assert "A. Impulse through myelinated" in by_line[1].prompt
    assert by_line[2].answer == "A" and by_line[2].response.startswith("Ans-a")
    # Every explanation that names its letter agrees with the 1-based mapping (a 0-based one would not).
    named = 0
    for e in by_line.values():
        m = re.match(r"\s*Ans(?:wer)?[\s.:\-]*(?:is)?[\s.:\-]*['\"(]?([a-dA-D])\b", e.response)
        if m:
            named += 1
            assert m.group(1).upper() == e.answer
    assert named > 500


def test_cop_guard(tmp_path):
    assert [cop_to_letter(i) for i in (1, 2, 3, 4)] == list("ABCD")
    for bad in (0, 5, "1", True):
        with pytest.raises(ValueError):
            cop_to_letter(bad)
    (tmp_path / "medmcqa").mkdir()
    row = {"question": "q", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "exp": None}
    (tmp_path / "medmcqa" / "dev.json").write_text(json.dumps({**row, "cop": 2}) + "\n" + json.dumps({**row, "cop": 0}) + "\n")
    t = make("medical", data_dir=tmp_path, include_pubmedqa=False)
    with pytest.raises(DataError, match=r"dev\.json: line 2: field 'cop'"):
        t.train_examples(0)


@needs_data
def test_pubmedqa_train_excludes_test_pmids():
    test_pmids = set(read_json(DATA / "pubmedqa" / "test_ground_truth.json"))
    pub = [e for e in make("medical", max_train_examples=None).train_examples(0) if e.meta["source"] == "pubmedqa_train"]
    assert len(pub) == 500
    assert not {e.meta["pmid"] for e in pub} & test_pmids
    assert {e.answer for e in pub} == {"yes", "no", "maybe"}
    assert all(e.response.endswith(f"The answer is {e.answer}.") for e in pub)


@needs_data
def test_medqa_heldout_is_stratified():
    t = make("medical")
    held = t.heldout_examples(20, seed=0)
    assert len({e.answer for e in held}) > 1
    assert held == t.heldout_examples(20, seed=0) and held != t.heldout_examples(20, seed=1)
    assert all(e.response == f"The answer is {e.answer}." for e in held)


def test_max_train_examples_validated():
    with pytest.raises(ConfigError, match="target.max_train_examples"):
        build(TARGETS.get("math").Options, {"max_train_examples": 0}, prefix="target")
    assert build(TARGETS.get("medical").Options, {"max_train_examples": "null"}).max_train_examples is None


# ---------------------------------------------------------------- arith

def test_arith_deterministic_correct_and_disjoint():
    t = make("arith")
    a = t.train_examples(0)
    assert a == make("arith").train_examples(0) and a != t.train_examples(1) and len(a) == 4000
    held = t.heldout_examples(500, seed=0)
    assert held == t.heldout_examples(500, seed=0) and held != t.heldout_examples(500, seed=1)
    key = lambda e: (e.meta["a"], e.meta["op"], e.meta["b"])
    train_keys = {key(e) for e in a}
    assert len(train_keys) == 4000
    for seed in (0, 1):
        assert not train_keys & {key(e) for e in t.heldout_examples(500, seed=seed)}
    for e in a[:200] + held[:200]:
        x, op, y = e.meta["a"], e.meta["op"], e.meta["b"]
        assert int(e.answer) == {"+": x + y, "-": x - y}[op] and int(e.answer) >= 0
        assert e.prompt == f"What is {x} {op} {y}?" and e.response == f"{x} {op} {y} = {e.answer}"


def test_arith_options():
    t = make("arith", ops=["*"], max_operand=50, n_train=100, prompt_style="instruction")
    ex = t.train_examples(0)
    assert all(e.meta["a"] <= 12 and e.meta["b"] <= 12 and e.prompt.startswith("Compute") for e in ex)
    assert problem_space(99, ["+", "-"], 12) == 100 * 100 + 100 * 101 // 2
    with pytest.raises(ConfigError, match=r"target.ops: invalid value '/'"):
        make("arith", ops=["+", "/"])
    with pytest.raises(ConfigError, match="max_operand"):
        make("arith", max_operand=1)
    with pytest.raises(ConfigError, match="n_train"):
        make("arith", max_operand=5, ops=["+"], n_train=40)  # 36 problems exist
    small = ArithTarget(build(ArithTarget.Options, {"max_operand": 5, "ops": ["+"], "n_train": 20}), None)
    assert len(small.heldout_examples(100, seed=0)) == 36 - 20  # all that is left, then it stops
