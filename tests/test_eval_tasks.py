"""Every task's data mapping, on the real benchmark files, against records read by hand.

The lm-eval Task objects are built exactly as an evaluation builds them (`runner.plan`), and the
stock `doc_to_text` / `doc_to_target` / `doc_to_choice` are applied to the mapped documents.
No model runs here.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import pytest
from doc_examples import write_doc_file

from arena.errors import ConfigError, DataError
from arena.evaluation.build import build_subtasks, export_yaml
from arena.evaluation.punkt import PUNKT_INSTRUCTIONS, ensure_punkt
from arena.evaluation.runner import plan
from arena.evaluation.settings import RunSettings, TaskOptions
from arena.evaluation.subsets import select_indices
from arena.evaluation.suites import resolve_tasks
from arena.evaluation.tasks import (
    TASKS,
    TASKS_VERSION,
    TaskDef,
    get_task,
    load_task_file,
    taskdef_files,
)
from arena.targets.medical import medmcqa_records


def _find_data_dir() -> Path | None:
    env = os.environ.get("ARENA_DATA_DIR")
    cand = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return cand if (cand / "ifeval" / "input_data.jsonl").is_file() else None


DATA = _find_data_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="real data folder not found: set ARENA_DATA_DIR")


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # converted files go to a throwaway cache; the prepared real model is not needed here
    monkeypatch.setenv("ARENA_CACHE", str(tmp_path_factory.getbasetemp() / "arena-cache"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """All tasks built once (loading the datasets is the slow part): {"tasks", "samples", ...}."""
    if DATA is None:
        pytest.skip("real data folder not found")
    names = TASKS.names()  # every registered benchmark: a new task file is built here too
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARENA_CACHE", str(tmp_path_factory.getbasetemp() / "arena-cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        return plan(names, str(DATA), RunSettings(limit=50, seed=0))


def _doc0(built, task):
    return built["tasks"][task].eval_docs[0]


@needs_data
def test_medmcqa_item0_shifts_the_1_based_cop(built):
    # dev.json line 1: "Which of the following is not true for myelinated nerve fibers:", cop 1 (1-based)
    # -> option a, "Impulse through myelinated fibers is slower ..." -> lm-eval target index 0 = "A".
    t = built["tasks"]["medmcqa"]
    doc = _doc0(built, "medmcqa")
    assert doc["question"].startswith("Which of the following is not true for myelinated nerve fibers")
    assert doc["cop"] == 0
    assert t.doc_to_choice(doc)[t.doc_to_target(doc)] == "A"
    assert "A. Impulse through myelinated fibers is slower than non-myelinated fibers" in t.doc_to_text(doc)


def test_medmcqa_rejects_zero_based_or_out_of_range_cop(tmp_path):
    bad = tmp_path / "dev.json"
    bad.write_text(json.dumps({"question": "q", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 0}) + "\n")
    with pytest.raises(DataError, match=r"line 1: field 'cop'"):
        medmcqa_records(bad)


@needs_data
def test_medqa_item0_maps_answer_letter_to_label(built):
    # line 1: the carpal-tunnel resident; answer_idx "B" = "Tell the attending that he cannot fail to disclose this mistake"
    t = built["tasks"]["medqa_4options"]
    doc = _doc0(built, "medqa_4options")
    assert doc["sent1"].startswith("A junior orthopaedic surgery resident")
    assert doc["label"] == 1 and doc["ending1"] == "Tell the attending that he cannot fail to disclose this mistake"
    assert t.doc_to_choice(doc)[t.doc_to_target(doc)] == "B"
    assert "B. Tell the attending" in t.doc_to_text(doc)


@needs_data
def test_pubmedqa_is_the_500_test_items_and_subsets_hold_all_three_labels(built):
    t = built["tasks"]["pubmedqa"]
    docs = t.eval_docs
    assert len(docs) == 500
    # test_ground_truth.json: first PMID 12377809 "yes", last 26134053 "maybe"; 276/169/55
    assert (docs[0]["pubid"], docs[0]["final_decision"]) == ("12377809", "yes")
    assert (docs[499]["pubid"], docs[499]["final_decision"]) == ("26134053", "maybe")
    assert t.doc_to_choice(docs[0])[t.doc_to_target(docs[0]) if isinstance(t.doc_to_target(docs[0]), int)
                                    else t.doc_to_choice(docs[0]).index(t.doc_to_target(docs[0]))] == "yes"
    assert "Question: Is anorectal endosonography valuable in dyschesia?" in t.doc_to_text(docs[0])
    assert collections.Counter(d["final_decision"] for d in docs) == {"yes": 276, "no": 169, "maybe": 55}
    # the first 50 (lm-eval's --limit) would be all "yes"; the arena subset is proportional:
    # quotas 50·276/500 = 27.6, 16.9, 5.5 -> 27, 16, 5 + largest remainders (.9 no, .6 yes) -> 28, 17, 5
    labels = collections.Counter(docs[i]["final_decision"] for i in built["samples"]["pubmedqa"])
    assert labels == {"yes": 28, "no": 17, "maybe": 5}
    assert collections.Counter(docs[i]["final_decision"] for i in range(50)) == {"yes": 50}
    for n in (3, 10, 20):
        sub = select_indices(docs, lambda d: d["final_decision"], n, f"eval/pubmedqa/{n}")
        assert {docs[i]["final_decision"] for i in sub} == {"yes", "no", "maybe"}


@needs_data
def test_ifeval_subsets_keep_the_sentence_counting_prompts(built):
    t = built["tasks"]["ifeval"]
    docs = t.eval_docs
    # input_data.jsonl line 1: key 1000, the Raymond III summary, first instruction punctuation:no_comma
    assert docs[0]["key"] == 1000 and docs[0]["instruction_id_list"][0] == "punctuation:no_comma"
    assert t.doc_to_text(docs[0]).startswith("Write a 300+ word summary of the wikipedia page")
    punkt = [i for i, d in enumerate(docs) if PUNKT_INSTRUCTIONS & set(d["instruction_id_list"])]
    assert len(docs) == 541 and len(punkt) == 64
    # 50·64/541 = 5.9 -> 5 (+1 by largest remainder .92 vs .08) = 6 of the 50
    assert len(set(built["samples"]["ifeval"]) & set(punkt)) == 6
    assert built["tasks"]["ifeval"].config.generation_kwargs["max_gen_toks"] == 256


@needs_data
def test_ifeval_sentence_checkers_run_with_punkt_tab_on_all_64_prompts(built):
    """The misleading failure (docs/design.md#ifeval-needs-punkt_tab): only these prompts need
    punkt_tab, and only for a non-empty response. Score a real multi-sentence response on every one
    of them."""
    from lm_eval.tasks.ifeval.utils import process_results

    ensure_punkt(str(DATA))
    docs = built["tasks"]["ifeval"].eval_docs
    response = "THE FIRST sentence is here. Dr. Smith wrote A SECOND one! Is this the THIRD? Yes."
    n = 0
    for d in docs:
        if PUNKT_INSTRUCTIONS & set(d["instruction_id_list"]):
            out = process_results(d, [response])
            assert len(out["inst_level_strict_acc"]) == len(d["instruction_id_list"])
            n += 1
    assert n == 64


def test_missing_punkt_is_a_clear_data_error(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.delenv("NLTK_DATA", raising=False)
    with pytest.raises(DataError, match="punkt_tab"):
        ensure_punkt(str(tmp_path))


@needs_data
def test_bbh_has_27_subtasks_reading_examples_field(built):
    subs = get_task("bbh").subtasks
    assert len(subs) == 27
    names = [f"bbh_fewshot_{s}" for s in subs]
    assert all(n in built["tasks"] for n in names)
    t = built["tasks"]["bbh_fewshot_boolean_expressions"]
    assert t.config.dataset_kwargs["field"] == "examples"
    # boolean_expressions.json examples[0]: "not ( True ) and ( True ) is" -> "False"
    doc = t.eval_docs[0]
    assert doc["input"] == "not ( True ) and ( True ) is" and t.doc_to_target(doc) == "False"
    assert t.config.num_fewshot == 3 and t.config.generation_kwargs["max_gen_toks"] == 64
    # limit 50 over 27 subtasks -> 2 each
    assert all(len(built["samples"][n]) == 2 for n in names)
    assert sum(len(t.eval_docs) for n, t in built["tasks"].items() if n.startswith("bbh_")) == 6511


@needs_data
def test_nq_gsm8k_math500_map_to_the_stock_fields(built):
    nq = built["tasks"]["nq_open"]
    doc = _doc0(built, "nq_open")  # "when was the last time anyone was on the moon"
    assert nq.doc_to_text(doc) == "Q: when was the last time anyone was on the moon?\nA:"
    assert "December 1972" in str(nq.doc_to_target(doc))
    assert len(nq.eval_docs) == 3610
    g = built["tasks"]["gsm8k"]
    assert g.doc_to_text(_doc0(built, "gsm8k")).startswith("Question: Janet")
    assert g.doc_to_target(_doc0(built, "gsm8k")).endswith("#### 18")
    assert g.config.num_fewshot == 5 and g.has_training_docs()  # few-shot pool: GSM8K train
    m = built["tasks"]["hendrycks_math500"]
    assert len(m.eval_docs) == 500
    assert _doc0(built, "hendrycks_math500")["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)"


@needs_data
def test_arith_task_is_the_targets_heldout_stream(built):
    from arena.targets.arith import ArithTarget

    t = built["tasks"]["arith"]
    docs = t.eval_docs
    ex = ArithTarget(ArithTarget.Options(), None).heldout_examples(500, 0)
    assert len(docs) == 500
    assert (docs[0]["question"], docs[0]["answer"]) == (ex[0].prompt, ex[0].answer)
    # the last-number filter extracts the answer from a reply shaped like the training responses
    from lm_eval.filters.extraction import RegexFilter

    spec = t.config.filter_list[0]["filter"][0]
    flt = RegexFilter(regex_pattern=spec["regex_pattern"], group_select=spec["group_select"])
    resp = [[f"Sure: 1 + 2 = 3, so {ex[0].prompt[8:-1]} = {ex[0].answer}"]]
    assert list(flt.apply(resp, [docs[0]]))[0][0] == ex[0].answer


def test_missing_data_file_names_the_file_and_the_fix(tmp_path):
    (tmp_path / "medqa").mkdir()
    with pytest.raises(DataError) as e:
        plan(["medqa_4options"], str(tmp_path), RunSettings(limit=2))
    msg = str(e.value)
    assert "medqa/phrases_no_exclude_test.jsonl" in msg and "ARENA_DATA_DIR" in msg and "--data-dir" in msg


def test_no_data_folder_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="nq_open/NQ-open.dev.jsonl"):
        plan(["nq_open"], None, RunSettings(limit=2))


def test_suites_and_task_subsets():
    from arena.components import TARGETS

    math_t = TARGETS.get("math")(TARGETS.get("math").Options(), None)
    assert resolve_tasks(["general", "target"], math_t) == {"general": ["ifeval", "bbh", "nq_open"],
                                                            "target": ["gsm8k", "math500"]}
    assert resolve_tasks(["medical"]) == {"target": ["medqa_4options", "pubmedqa"]}
    assert resolve_tasks(["general"], None, ["ifeval", "nq_open"]) == {"general": ["ifeval", "nq_open"]}
    assert resolve_tasks(["general"], None, ["medmcqa"]) == {"extra": ["medmcqa"]}
    with pytest.raises(ConfigError, match="needs a target"):
        resolve_tasks(["target"])
    with pytest.raises(ConfigError, match="did you mean 'general'"):
        resolve_tasks(["genral"])
    with pytest.raises(ConfigError, match="did you mean 'ifeval'"):
        resolve_tasks(["general"], None, ["ifevl"])


def test_task_options_validate():
    with pytest.raises(ConfigError, match="bbh_variant"):
        TaskOptions(bbh_variant="fewshots")
    with pytest.raises(ConfigError, match="bbh_shots"):
        TaskOptions(bbh_variant="zeroshot", bbh_shots=2)
    with pytest.raises(ConfigError, match="max_gen_toks.ifeval"):
        TaskOptions(max_gen_toks={"ifeval": 0})
    assert get_task("ifeval").gen_cap(TaskOptions(max_gen_toks={"ifeval": 99})) == 99
    assert get_task("ifeval").gen_cap(TaskOptions()) == 256


@needs_data
def test_export_yaml_includes_the_stock_file(tmp_path, built):
    import yaml

    subs = build_subtasks(["pubmedqa", "bbh"], str(DATA), TaskOptions())
    paths = export_yaml([st for sts in subs.values() for st in sts], tmp_path)
    assert len(paths) == 28
    doc = yaml.safe_load((tmp_path / "pubmedqa.yaml").read_text())
    assert doc["include"].endswith("lm_eval/tasks/pubmedqa/pubmedqa.yaml")
    assert doc["dataset_path"] == "json" and doc["dataset_kwargs"]["data_files"]["test"].endswith(".jsonl")
    assert doc["training_split"] is None and doc["validation_split"] is None


def test_without_a_data_folder_the_stock_hub_datasets_are_used(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    subs = build_subtasks(["ifeval", "pubmedqa", "bbh"], None, TaskOptions())
    ife = subs["ifeval"][0].config()
    assert ife["dataset_path"] == "google/IFEval" and "dataset_kwargs" not in subs["ifeval"][0].overrides
    assert ife["generation_kwargs"]["max_gen_toks"] == 256  # the CPU cap applies online too
    assert subs["pubmedqa"][0].config()["dataset_path"] == "bigbio/pubmed_qa"
    assert subs["bbh"][0].config()["dataset_path"] == "SaylorTwift/bbh"


# ------------------------------------------------------------------ contract: every registered task

@needs_data
@pytest.mark.parametrize("name", TASKS.names())
def test_task_contract_builds_offline_and_states_its_metric(name, built):
    td = get_task(name)
    subs = built["subtasks"][name]
    assert len(subs) == (len(td.subtasks) if td.grouped else 1)
    for st in subs:
        task = built["tasks"][st.name]  # lm-eval loaded the config, documents included
        assert task.eval_docs and built["samples"][st.name]
        assert td.metric in [m["metric"] for m in task.config.metric_list]
        assert set(td.metrics) <= {m["metric"] for m in task.config.metric_list}
        cfg = st.config()
        assert cfg["metadata"]["arena_tasks_version"] == TASKS_VERSION
        if cfg.get("dataset_path") == "json":  # offline: only local (or converted) files are read
            files = cfg["dataset_kwargs"]["data_files"].values()
            assert all(Path(f).is_file() for f in files)
        else:
            pytest.fail(f"{st.name} does not read local files offline")
    assert td.files or td.generated_by is not None


@pytest.mark.parametrize("name", TASKS.names())
def test_task_contract_generating_tasks_have_a_cap(name):
    td = get_task(name)
    if not td.generate:
        assert td.max_gen_toks is None
        return
    assert isinstance(td.max_gen_toks, int) and td.max_gen_toks > 0
    assert td.gen_cap(TaskOptions()) == td.max_gen_toks
    assert td.gen_cap(TaskOptions(max_gen_toks={name: 7})) == 7


def test_task_files_are_package_data_found_through_importlib():
    import importlib.resources
    from fnmatch import fnmatch

    import tomllib

    folder = importlib.resources.files("arena.evaluation") / "taskdefs"
    shipped = sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))
    assert shipped == sorted(p.name for p in taskdef_files()) == sorted(f"{n}.yaml" for n in TASKS.names())
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["arena.evaluation"]
    assert all(any(fnmatch(f"taskdefs/{n}", pat) for pat in patterns) for n in shipped)


def test_bbh_subtasks_are_the_stock_folders_of_every_variant():
    from arena.evaluation.build import stock_root
    from arena.evaluation.settings import BBH_VARIANTS

    for variant in BBH_VARIANTS:
        folder = stock_root() / "bbh" / variant
        assert sorted(p.stem for p in folder.glob("*.yaml") if not p.name.startswith("_")) == get_task("bbh").subtasks


# Three ARC-style questions in the HF layout (written for this test): labels as letters, and as
# digits (as some ARC questions have them), so the target index is looked up, not assumed.
ARC_ROWS = [
    {"id": "q1", "question": "Which gas do plants take in from the air to make food?", "answerKey": "B",
     "choices": {"text": ["oxygen", "carbon dioxide", "nitrogen", "helium"], "label": ["A", "B", "C", "D"]}},
    {"id": "q2", "question": "What makes a shadow?", "answerKey": "3",
     "choices": {"text": ["heat", "sound", "an object blocking light"], "label": ["1", "2", "3"]}},
    {"id": "q3", "question": "Which is a liquid at room temperature?", "answerKey": "A",
     "choices": {"text": ["water", "ice", "steam", "salt"], "label": ["A", "B", "C", "D"]}},
]


def test_the_documented_task_file_builds_through_lm_eval(tmp_path, monkeypatch):
    """docs/extending.md's benchmark walk-through: its ARC-Easy task file, loaded from the page into
    a copy of TASKS, builds through lm-eval on a local file in the HF layout."""
    from arena.evaluation.build import data_fingerprint
    from arena.evaluation.tasks import register

    td = load_task_file(write_doc_file("# arena/evaluation/taskdefs/arc_easy.yaml", tmp_path / "arc_easy.yaml",
                                       lang="yaml"))
    assert isinstance(td, TaskDef) and td.name == "arc_easy" and td.files == ("arc/ARC-Easy-Test.jsonl",)
    assert not td.generate and td.max_gen_toks is None and td.metric == "acc" and td.metrics == ["acc_norm"]
    data = tmp_path / "data"
    (data / "arc").mkdir(parents=True)
    (data / "arc" / "ARC-Easy-Test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ARC_ROWS))
    monkeypatch.setattr(TASKS, "_items", dict(TASKS._items))  # registered for this test only
    register(td)

    built = plan(["arc_easy"], str(data), RunSettings(limit=2))
    task = built["tasks"]["arc_easy"]
    docs = task.eval_docs
    assert len(docs) == 3 and len(built["samples"]["arc_easy"]) == 2
    assert task.doc_to_text(docs[0]) == "Question: Which gas do plants take in from the air to make food?\nAnswer:"
    assert [task.doc_to_target(d) for d in docs] == [1, 2, 0]
    assert task.doc_to_choice(docs[1])[2] == "an object blocking light"
    assert {m["metric"] for m in task.config.metric_list} >= {"acc", "acc_norm"}
    (st,) = built["subtasks"]["arc_easy"]
    cfg = st.config()
    assert cfg["training_split"] is None and cfg["validation_split"] is None and cfg["test_split"] == "test"
    assert cfg["dataset_kwargs"]["data_files"] == {"test": str(data / "arc" / "ARC-Easy-Test.jsonl")}
    assert list(data_fingerprint("arc_easy", str(data))) == ["arc/ARC-Easy-Test.jsonl"]
    assert resolve_tasks(["general"], None, ["arc_easy"]) == {"extra": ["arc_easy"]}


def test_task_file_errors_name_the_file_and_field(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("description: x\ninclude: nq_open/nq_open.yaml\nmetric: exact_match\n")
    with pytest.raises(ConfigError, match="max_gen_toks"):
        load_task_file(f)  # a generating task must state its cap
    f.write_text("description: x\ninclude: nq_open/nq_open.yaml\nmetric: exact_match\ngenerate: false\nmetrik: acc\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml\.metrik.*did you mean 'metric'"):
        load_task_file(f)


@needs_data
def test_per_benchmark_limits(tmp_path, monkeypatch):
    """eval.limit as a mapping: each benchmark its own documents, `default` for the rest; BBH's share
    is split over its subtasks; the prefix property holds (a larger subset contains the smaller)."""
    monkeypatch.setenv("ARENA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    p = plan(["nq_open", "ifeval", "bbh"], str(DATA), RunSettings(limit={"nq_open": 40, "default": 6}))
    sizes = {k: len(v) for k, v in p["samples"].items()}
    assert sizes["nq_open"] == 40 and sizes["ifeval"] == 6
    assert {n for k, n in sizes.items() if k.startswith("bbh")} == {1}  # 6 over 27 subtasks: ceil -> 1 each
    one = plan(["nq_open"], str(DATA), RunSettings(limit=40))["samples"]["nq_open"]
    assert one == p["samples"]["nq_open"]  # an int and a mapping entry of the same size pick the same docs
    with pytest.raises(ConfigError) as e:
        RunSettings(limit={"nq_opn": 5})
    assert e.value.field == "limit.nq_opn" and "nq_open" in e.value.allowed


def test_limit_flag_per_benchmark():
    from arena.commands.eval import _limits

    assert _limits([]) is None and _limits(["50"]) == 50
    assert _limits(["ifeval=64", "200"]) == {"ifeval": 64, "default": 200}
    with pytest.raises(ConfigError) as e:
        _limits(["ifeval=many"])
    assert e.value.field == "--limit"
