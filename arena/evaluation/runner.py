"""Run arena tasks through lm-eval on an in-memory model: plan the tasks and documents, evaluate,
and turn the samples into scores.

lm-eval is the engine: `HFLM(pretrained=<model object>)` wraps the model as it is (`lm_eval_model`),
the tasks are the stock ones built from the task definitions (`build`), and `simple_evaluate`
produces per-document metrics. What the arena adds, each in its own module: seeded stratified
subsets instead of lm-eval's first N (`subsets`), scores and SEs recomputed from the per-document
metrics (`scoring`), and the caller's RNG streams and train/eval mode restored (`preserve`).
"""

from __future__ import annotations

import importlib.metadata
import time

from arena.errors import DataError
from arena.evaluation.build import build_subtasks
from arena.evaluation.lm_eval_model import (
    QuietProgress,
    counting_hflm_class,
    mixed_precision,
    quiet_lm_eval,
)
from arena.evaluation.preserve import PreservedState
from arena.evaluation.scoring import task_result
from arena.evaluation.settings import RunSettings, limit_for
from arena.evaluation.subsets import per_subtask_limit, select_indices
from arena.evaluation.tasks import get_task


def plan(names: list[str], data_dir: str | None, settings: RunSettings, target=None,
         select: dict[str, list[int]] | None = None) -> dict:
    """Build the lm-eval tasks and choose the documents: {"subtasks", "tasks", "samples", "available"}.

    Separate from `run_tasks` so the benchmark can export the identical tasks and documents to the
    plain `lm_eval` CLI. `select` ({lm-eval task: [doc indices]}) replaces the seeded subset of
    the tasks it names (tests use it to pick IFEval's sentence-counting prompts).
    """
    from lm_eval.tasks import TaskManager

    for n in names:
        get_task(n).prepare_data(data_dir)
    subtasks = build_subtasks(names, data_dir, settings.options, target)
    tm = TaskManager(include_defaults=False)  # the stock index takes ~7 s to build and is not needed
    configs = [st.config() for sts in subtasks.values() for st in sts]
    try:
        loaded = tm.load(configs)["tasks"]
    except FileNotFoundError as e:
        raise DataError(f"lm-eval could not read a data file: {e}") from None
    samples: dict[str, list[int]] = {}
    available: dict[str, int] = {}
    for name, sts in subtasks.items():
        td = get_task(name)
        strata = td.stratify()
        lim = per_subtask_limit(limit_for(settings.limit, name), len(sts))
        for st in sts:
            docs = loaded[st.name].eval_docs
            available[st.name] = len(docs)
            if select and st.name in select:
                samples[st.name] = sorted(select[st.name])
            else:
                samples[st.name] = select_indices(docs, strata, lim, f"eval/{st.name}/{settings.seed}")
    return {"subtasks": subtasks, "tasks": loaded, "samples": samples, "available": available, "task_manager": tm}


def run_tasks(model, tokenizer, names: list[str], data_dir: str | None, settings: RunSettings,
              target=None, verbose: bool = False, progress: bool = False,
              select: dict[str, list[int]] | None = None, keep_responses: bool = False) -> dict:
    """Evaluate `model` on the arena tasks `names`; returns {"tasks": {name: result}, "engine": {...}}
    and, with `keep_responses`, {"responses": {lm-eval task: {doc_id: raw response}}} (benchmarks
    compare engines document by document with it)."""
    import lm_eval
    from lm_eval import simple_evaluate

    from arena.generation.engine import resolve_engine  # imports torch; light commands import this module

    quiet_lm_eval(verbose)
    t0 = time.perf_counter()
    p = plan(names, data_dir, settings, target, select)
    t_plan = time.perf_counter() - t0
    device = next(model.parameters()).device
    chat = settings.chat_template
    if chat is None:
        chat = bool(getattr(tokenizer, "chat_template", None))
    mixed = mixed_precision(settings.precision, device)
    engine_name = resolve_engine(settings.engine, model, device)
    lm = counting_hflm_class()(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size,
                               mixed_precision_dtype=mixed, engine=engine_name,
                               engine_precision="bf16-autocast" if mixed is not None else "fp32", seed=settings.seed)
    t1 = time.perf_counter()
    with PreservedState(model), QuietProgress(progress, verbose):
        out = simple_evaluate(lm, tasks=list(p["tasks"].values()),
                              samples=p["samples"] if settings.limit is not None or select else None,
                              task_manager=p["task_manager"], apply_chat_template=chat,
                              fewshot_as_multiturn=True, bootstrap_iters=0, log_samples=True)
    t_eval = time.perf_counter() - t1
    results = {}
    for name, sts in p["subtasks"].items():
        results[name] = task_result(get_task(name), sts, out["samples"], p["available"], out.get("configs", {}))
        results[name]["settings"]["chat_template"] = chat
    c = dict(lm.counters)
    engine = {
        "lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else importlib.metadata.version("lm_eval"),
        "plan_s": round(t_plan, 2), "eval_s": round(t_eval, 2),
        "chat_template": chat, "batch_size": settings.batch_size, "generation_engine": engine_name,
        "precision": "bf16-autocast" if lm.mixed_precision_dtype is not None else "fp32",
        "device": str(device),
        # tokens_per_s counts new tokens only; prefill of the prompts is in the same seconds
        "generation": {"tokens": c["gen_tokens"], "prompt_tokens": c["gen_prompt_tokens"], "seconds": round(c["gen_seconds"], 2),
                       "tokens_per_s": round(c["gen_tokens"] / c["gen_seconds"], 1) if c["gen_seconds"] else None,
                       "all_tokens_per_s": round((c["gen_tokens"] + c["gen_prompt_tokens"]) / c["gen_seconds"], 1)
                       if c["gen_seconds"] else None,
                       **({"prefill_seconds": round(c["gen_prefill_seconds"], 2), "decode_seconds": round(c["gen_decode_seconds"], 2),
                           "decode_steps": c["gen_decode_steps"]} if c.get("gen_decode_steps") else {})},
        "loglikelihood": {"tokens": c["ll_tokens"], "seconds": round(c["ll_seconds"], 2),
                          "tokens_per_s": round(c["ll_tokens"] / c["ll_seconds"], 1) if c["ll_seconds"] else None},
    }
    out_run = {"tasks": results, "engine": engine}
    if keep_responses:
        out_run["responses"] = {st: {s["doc_id"]: s["resps"][0][0] for s in ss}
                                for st, ss in out["samples"].items()}
    return out_run
