"""The benchmarks the arena scores, each a stock lm-eval task with its data source swapped.

A task here is a thin *override* of lm-eval's own YAML: the stock file is loaded (includes and
`!function`s resolved by lm-eval's loader) and only the data source, the unused splits, the few-shot
count and the generation cap are replaced. Prompts, filters and metrics stay lm-eval's. The same
overrides can be exported as YAML files that `include:` the stock file (`export_yaml`), which is how
the plain `lm_eval` CLI runs the identical tasks in `benchmarks/bench_eval.py`.

Offline (a data folder is given) every task reads the files under it (see PROVENANCE.md); with no
folder and the hub reachable the stock dataset is used unchanged. Three benchmarks have raw files
whose fields differ from what the stock task reads; they are converted once into JSONL files in the
cache (`arena.evaluation.convert`), so the stock `doc_to_text`/`doc_to_target` apply unchanged.

Bump `TASKS_VERSION` whenever a definition below changes what is scored: it is part of every
base-cache key, so cached base scores from older definitions are never reused.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arena.data.io import data_file, sha256_file
from arena.errors import ConfigError, suggest
from arena.evaluation.settings import TaskOptions

TASKS_VERSION = 1

# IFEval instructions whose checkers call nltk's punkt tokenizer (count_sentences, word_tokenize).
# Without punkt_tab only these prompts fail, and only when the response is non-empty (DESIGN.md).
PUNKT_INSTRUCTIONS = frozenset({"length_constraints:number_sentences", "change_case:capital_word_frequency"})


@dataclass
class BuildContext:
    data_dir: str | None
    options: TaskOptions
    target: Any = None  # the run's Target instance (arith options) or None


@dataclass
class Subtask:
    """One lm-eval task: the stock YAML it overrides (None: defined here) and the overrides."""

    name: str  # the lm-eval task name
    stock: str | None  # path relative to lm_eval/tasks, or None for arena-defined tasks
    overrides: dict

    def config(self) -> dict:
        """The full lm-eval config dict (what `simple_evaluate` / `TaskManager.load` take)."""
        cfg = stock_config(self.stock) if self.stock else {}
        cfg.update(copy.deepcopy(self.overrides))
        cfg["task"] = self.name
        return cfg


@dataclass(frozen=True)
class TaskDef:
    """A benchmark of the arena: how to build its lm-eval task(s) and how to read its score."""

    name: str
    description: str
    metric: str  # primary metric (lm-eval's per-sample metric name)
    builder: Callable[[BuildContext], list[Subtask]]
    files: tuple = ()  # data files (relative to the data folder) read offline
    metrics: tuple = ()  # further metrics reported next to the primary one
    filters: tuple = ("none",)  # lm-eval filter names, in order of preference
    strata: Callable[[dict], Any] | None = None  # doc -> label for stratified subsets
    generate: bool = True  # generate_until (else loglikelihood / multiple choice)
    version: int = 1

    @property
    def grouped(self) -> bool:
        return self.name == "bbh"


TASKS: dict[str, TaskDef] = {}


def register(td: TaskDef) -> TaskDef:
    if td.name in TASKS:
        raise ValueError(f"task {td.name!r} registered twice")
    TASKS[td.name] = td
    return td


def get_task(name: str) -> TaskDef:
    if name not in TASKS:
        raise ConfigError("tasks", name, f"known tasks: {', '.join(sorted(TASKS))}{suggest(name, TASKS)}")
    return TASKS[name]


# ------------------------------------------------------------------ lm-eval plumbing

def stock_root() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


@functools.cache
def _stock_config_cached(rel: str) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(stock_root() / rel, resolve_func=True)


def stock_config(rel: str) -> dict:
    """The stock lm-eval YAML `rel` (under lm_eval/tasks) with includes and functions resolved."""
    return copy.deepcopy(_stock_config_cached(rel))


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _local(stock: dict, splits: dict[str, Path], field_name: str | None = None) -> dict:
    """Overrides that point a stock config at local files: `json` loader, data_files per split.

    Splits the stock config names but the local data lacks (train/validation pools) are set to
    None, so lm-eval never looks for them.
    """
    kwargs: dict = {"data_files": {split: str(p) for split, p in splits.items()}}
    if field_name:
        kwargs["field"] = field_name
    out: dict = {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": kwargs}
    for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        if stock.get(key) is not None and stock[key] not in splits:
            out[key] = None
    return out


def _gen(stock: dict, cap: int) -> dict:
    kw = dict(stock.get("generation_kwargs") or {})
    kw["max_gen_toks"] = cap
    return {"generation_kwargs": kw}


def _files(ctx: BuildContext, rels, who: str) -> list[Path]:
    return [data_file(ctx.data_dir, rel, needed_by=f"task {who!r}") for rel in rels]


def _online_or_fail(ctx: BuildContext, td_name: str, rels) -> None:
    """No data folder: fine with the hub (stock datasets), a clear DataError without it."""
    if hub_offline():
        data_file(None, ", ".join(rels), needed_by=f"task {td_name!r} (the hub is offline: HF_HUB_OFFLINE=1)")


def _simple(name: str, stock_rel: str, splits: dict[str, str], field_name: str | None = None):
    """Builder for a task whose raw file already has the fields the stock task reads."""

    def build(ctx: BuildContext) -> list[Subtask]:
        td = TASKS[name]
        stock = stock_config(stock_rel)
        over: dict = {}
        if ctx.data_dir is not None:
            paths = _files(ctx, splits.values(), name)
            over.update(_local(stock, dict(zip(splits, paths)), field_name))
        else:
            _online_or_fail(ctx, name, list(splits.values()))
        if td.generate:
            over.update(_gen(stock, ctx.options.gen_cap(name)))
        over["metadata"] = {**(stock.get("metadata") or {}), "arena_tasks_version": TASKS_VERSION}
        return [Subtask(stock["task"], stock_rel, over)]

    return build


def _converted(name: str, stock_rel: str, split: str, convert: Callable[[BuildContext], Path]):
    """Builder for a task whose raw files need a field mapping (JSONL written to the cache)."""

    def build(ctx: BuildContext) -> list[Subtask]:
        stock = stock_config(stock_rel)
        over: dict = {}
        if ctx.data_dir is not None:
            over.update(_local(stock, {split: convert(ctx)}))
        else:
            _online_or_fail(ctx, name, TASKS[name].files)
        over["metadata"] = {**(stock.get("metadata") or {}), "arena_tasks_version": TASKS_VERSION}
        return [Subtask(stock["task"], stock_rel, over)]

    return build


# ------------------------------------------------------------------ the benchmarks

def _ifeval_strata(doc: dict) -> str:
    return "punkt" if PUNKT_INSTRUCTIONS & set(doc.get("instruction_id_list") or ()) else "other"


register(TaskDef(
    name="ifeval", description="IFEval (instruction-level strict accuracy; prompt-level reported too)",
    metric="inst_level_strict_acc",
    metrics=("prompt_level_strict_acc", "inst_level_loose_acc", "prompt_level_loose_acc"),
    files=("ifeval/input_data.jsonl",), strata=_ifeval_strata,
    builder=_simple("ifeval", "ifeval/ifeval.yaml", {"train": "ifeval/input_data.jsonl"}),
))

register(TaskDef(
    name="nq_open", description="NQ-open dev (exact match, 0-shot)", metric="exact_match",
    filters=("remove_whitespace", "none"), files=("nq_open/NQ-open.dev.jsonl",),
    builder=_simple("nq_open", "nq_open/nq_open.yaml", {"validation": "nq_open/NQ-open.dev.jsonl"}),
))


def bbh_subtasks(variant: str = "fewshot") -> list[str]:
    """The 27 BBH subtask names, from the stock variant folder."""
    folder = stock_root() / "bbh" / variant
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.name.startswith("_"))


def _bbh_build(ctx: BuildContext) -> list[Subtask]:
    o = ctx.options
    out = []
    subs = bbh_subtasks(o.bbh_variant)
    if ctx.data_dir is not None:
        _files(ctx, [f"bbh/{s}.json" for s in subs], "bbh")  # all missing files fail before any work
    else:
        _online_or_fail(ctx, "bbh", ["bbh/<subtask>.json"])
    for sub in subs:
        rel = f"bbh/{o.bbh_variant}/{sub}.yaml"
        stock = stock_config(rel)
        over: dict = {}
        if ctx.data_dir is not None:
            over.update(_local(stock, {"test": Path(ctx.data_dir) / "bbh" / f"{sub}.json"}, "examples"))
        over.update(_gen(stock, o.gen_cap("bbh")))
        if o.bbh_shots is not None:
            over["num_fewshot"] = o.bbh_shots
        over["metadata"] = {**(stock.get("metadata") or {}), "arena_tasks_version": TASKS_VERSION}
        out.append(Subtask(stock["task"], rel, over))
    return out


register(TaskDef(
    name="bbh", description="BIG-Bench Hard, all 27 subtasks, unweighted mean (variant/shots configurable)",
    metric="exact_match", files=tuple(f"bbh/{s}.json" for s in (
        "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "dyck_languages",
        "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
        "logical_deduction_seven_objects", "logical_deduction_three_objects", "movie_recommendation",
        "multistep_arithmetic_two", "navigate", "object_counting", "penguins_in_a_table",
        "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
        "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
        "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
        "word_sorting")),
    filters=("flexible-extract", "get-answer", "none", "strict-match"),
    strata=lambda doc: doc.get("target"), builder=_bbh_build,
))

register(TaskDef(
    name="gsm8k", description="GSM8K test (5-shot from train; exact match on the last number)",
    metric="exact_match", filters=("flexible-extract", "strict-match"),
    files=("gsm8k/test.jsonl", "gsm8k/train.jsonl"),
    builder=_simple("gsm8k", "gsm8k/gsm8k.yaml", {"test": "gsm8k/test.jsonl", "train": "gsm8k/train.jsonl"}),
))

# hendrycks_math500, not minerva_math500: the Minerva variant asserts antlr4-python3-runtime==4.11,
# which conflicts with math-verify's 4.13 pin; the Hendrycks one needs nothing extra.
register(TaskDef(
    name="math500", description="MATH-500 (lm-eval hendrycks_math500, 0-shot, exact match)", metric="exact_match",
    files=("math/math500/test.jsonl",),
    builder=_simple("math500", "hendrycks_math/hendrycks_math500.yaml", {"test": "math/math500/test.jsonl"}),
))


def _convert(kind: str):
    def run(ctx: BuildContext) -> Path:
        from arena.evaluation import convert

        return convert.converted(kind, ctx)

    return run


register(TaskDef(
    name="medqa_4options", description="MedQA USMLE 4 options test (loglikelihood over A-D)", metric="acc",
    metrics=("acc_norm",), files=("medqa/phrases_no_exclude_test.jsonl",), generate=False,
    strata=lambda doc: doc.get("label"),
    builder=_converted("medqa_4options", "medqa/medqa.yaml", "test", _convert("medqa")),
))

register(TaskDef(
    name="pubmedqa", description="PubMedQA PQA-L official 500-item test (yes/no/maybe, loglikelihood)",
    metric="acc", files=("pubmedqa/ori_pqal.json", "pubmedqa/test_ground_truth.json"), generate=False,
    strata=lambda doc: doc.get("final_decision"),
    builder=_converted("pubmedqa", "pubmedqa/pubmedqa.yaml", "test", _convert("pubmedqa")),
))

# MedMCQA dev is the medical target's *training* set, so it is in no suite; it is here so the
# mapping (1-based cop) is exercised and available with `--tasks medmcqa` for other models.
register(TaskDef(
    name="medmcqa", description="MedMCQA dev (not in any suite: the medical target trains on it)", metric="acc",
    metrics=("acc_norm",), files=("medmcqa/dev.json",), generate=False, strata=lambda doc: doc.get("cop"),
    builder=_converted("medmcqa", "medmcqa/medmcqa.yaml", "validation", _convert("medmcqa")),
))


def _arith_build(ctx: BuildContext) -> list[Subtask]:
    from arena.evaluation import convert

    path = convert.converted("arith", ctx)
    over = {
        "dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": {"test": str(path)}},
        "test_split": "test", "output_type": "generate_until",
        "doc_to_text": "{{question}}", "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n\n"], "do_sample": False, "temperature": 0.0,
                              "max_gen_toks": ctx.options.gen_cap("arith")},
        # The answer is the last integer of the reply ("12 + 5 = 17" -> 17).
        "filter_list": [{"name": "last-number", "filter": [
            {"function": "regex", "regex_pattern": r"(-?\d[\d,]*)", "group_select": -1},
            {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "regexes_to_ignore": [","]}],
        "num_fewshot": 0,
        "metadata": {"version": 1, "arena_tasks_version": TASKS_VERSION},
    }
    return [Subtask("arith", None, over)]


register(TaskDef(
    name="arith", description="held-out generated arithmetic of the arith target (exact match on the number)",
    metric="exact_match", filters=("last-number",), builder=_arith_build,
))


# ------------------------------------------------------------------ suites

GENERAL = ("ifeval", "bbh", "nq_open")


def target_tasks(target) -> list[str]:
    """A target's benchmarks (`Target.eval_tasks()`), checked against this registry."""
    names = list(target.eval_tasks())
    for n in names:
        get_task(n)
    return names


def resolve_tasks(suites: list[str], target=None, tasks: list[str] | None = None) -> dict[str, list[str]]:
    """{axis: [task, ...]} for suites ('general', 'target', or a target name) and an optional subset.

    `tasks` keeps only the named benchmarks of the chosen suites; a name in `tasks` that no suite
    holds is added on its own (axis 'extra'), so `--tasks medmcqa` works with any suite.
    """
    from arena.components import TARGETS

    if not suites:
        raise ConfigError("suite", suites, "give at least one of: general, target, " + ", ".join(TARGETS.names()))
    out: dict[str, list[str]] = {}
    for s in suites:
        if s == "general":
            out["general"] = list(GENERAL)
        elif s == "target":
            if target is None:
                raise ConfigError("suite", s, "suite 'target' needs a target (--target NAME, or --run DIR)")
            out["target"] = target_tasks(target)
        elif s in TARGETS:
            t = TARGETS.get(s)
            out["target"] = target_tasks(t(t.Options(), None))
        else:
            allowed = ["general", "target", *TARGETS.names()]
            raise ConfigError("suite", s, f"allowed: {', '.join(allowed)}{suggest(s, allowed)}")
    if tasks:
        for n in tasks:
            get_task(n)
        kept = {axis: [n for n in names if n in tasks] for axis, names in out.items()}
        extra = [n for n in tasks if not any(n in names for names in out.values())]
        out = {axis: names for axis, names in kept.items() if names}
        if extra:
            out["extra"] = extra
    return out


# ------------------------------------------------------------------ provenance and export

def data_fingerprint(name: str, data_dir: str | None) -> dict:
    """{relpath: sha256} of the files a task reads (or the stock hub dataset when online)."""
    td = get_task(name)
    if name == "arith":
        return {"generated": "arith target held-out stream"}
    if data_dir is None:
        return {"hub": "stock lm-eval dataset"}
    return {rel: sha256_file(data_file(data_dir, rel, needed_by=f"task {name!r}")) for rel in td.files}


def export_yaml(subtasks: list[Subtask], folder: Path) -> list[Path]:
    """Write each subtask as a YAML that `include:`s the stock file plus the overrides.

    The plain `lm_eval` CLI runs these with `--include_path folder --tasks <names>`.
    Arena-defined tasks (arith) are written in full.
    """
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for st in subtasks:
        doc = dict(st.overrides)
        if st.stock:
            doc = {"include": str(stock_root() / st.stock), **doc}
        doc["task"] = st.name
        doc.pop("metadata", None)  # the stock metadata (version) comes through the include
        p = folder / f"{st.name}.yaml"
        p.write_text(yaml.safe_dump(doc, sort_keys=False))
        paths.append(p)
    return paths


def check_available(names: list[str], data_dir: str | None) -> None:
    """Fail fast (DataError naming the file) before any model work."""
    for n in names:
        td = get_task(n)
        if n == "arith":
            continue
        if data_dir is None:
            if hub_offline():
                _online_or_fail(BuildContext(None, TaskOptions()), n, td.files)
            continue
        for rel in td.files:
            data_file(data_dir, rel, needed_by=f"task {n!r}")
    if "ifeval" in names:
        from arena.evaluation.runner import ensure_punkt

        ensure_punkt(data_dir)


__all__ = [
    "GENERAL",
    "TASKS",
    "TASKS_VERSION",
    "BuildContext",
    "Subtask",
    "TaskDef",
    "bbh_subtasks",
    "data_fingerprint",
    "export_yaml",
    "get_task",
    "resolve_tasks",
]
