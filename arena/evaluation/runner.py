"""Run arena tasks through lm-eval on an in-memory model and turn the samples into scores.

lm-eval is the engine: `HFLM(pretrained=<model object>)` wraps the model as it is (also a
peft-wrapped one mid-training; nothing is written to disk), the tasks are the stock ones built by
`arena.evaluation.tasks`, and `simple_evaluate` produces per-document metrics. What the arena adds:

- subsets: `--limit` never takes lm-eval's first N documents (PubMedQA's test file is sorted by
  label); the documents are chosen here, seeded and stratified by label where a task has one, and
  handed to lm-eval as `samples={task: [doc indices]}`;
- statistics: scores and standard errors are recomputed from the per-document metrics
  (`arena.evaluation.stats`), so every benchmark has n and a SE and two models can be compared
  paired on the same documents;
- hygiene for in-training use: the caller's RNG streams and train/eval mode are restored, so an
  evaluation every N steps does not change the training run it observes.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any

from arena.data.io import stable_shuffle
from arena.errors import DataError
from arena.evaluation import stats
from arena.evaluation.settings import RunSettings, TaskOptions
from arena.evaluation.tasks import (
    BuildContext,
    Subtask,
    get_task,
    hub_offline,
)

MAX_STRATA = 20  # labels with more distinct values than this (free-text answers) are not strata


# ------------------------------------------------------------------ NLTK

def ensure_punkt(data_dir: str | None) -> str:
    """Make nltk find punkt_tab (IFEval's sentence counter) and prove it works; returns its folder.

    IFEval without punkt_tab fails late and misleadingly: nltk's offline download "succeeds", and
    only the 64 prompts whose checkers count sentences raise, and only for non-empty responses.
    So this runs those checkers on a fixed text up front and raises a DataError instead.
    """
    import nltk

    if data_dir:
        folder = Path(data_dir) / "nltk_data"
        if folder.is_dir():
            env = os.environ.get("NLTK_DATA", "")
            if str(folder) not in env.split(os.pathsep):
                os.environ["NLTK_DATA"] = os.pathsep.join(p for p in (str(folder), env) if p)
            if str(folder) not in nltk.data.path:
                nltk.data.path.insert(0, str(folder))  # nltk read NLTK_DATA at import time
    try:
        found = nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        if hub_offline():
            where = f"{Path(data_dir) / 'nltk_data'}" if data_dir else "NLTK_DATA or nltk's search path"
            raise DataError(f"IFEval needs the NLTK 'punkt_tab' tokenizer data, not found in {where}; provide "
                            f"<data dir>/nltk_data/tokenizers/punkt_tab (see PROVENANCE.md) or set NLTK_DATA") from None
        nltk.download("punkt_tab", quiet=True)
        found = nltk.data.find("tokenizers/punkt_tab/english/")
    from lm_eval.tasks.ifeval import instructions_util

    n = instructions_util.count_sentences("This is one. This is Mr. Smith's second! And a third?")
    if n != 3 or instructions_util.nltk.word_tokenize("HELLO there") != ["HELLO", "there"]:
        raise DataError(f"punkt_tab at {found} loads but splits sentences wrongly ({n} instead of 3)")
    return str(found)


# ------------------------------------------------------------------ subsets

def per_subtask_limit(limit: int | None, n_subtasks: int) -> int | None:
    """A benchmark's `limit` split evenly over its subtasks, rounded up (at least 1 each)."""
    return None if limit is None else max(1, math.ceil(limit / n_subtasks))


def allocate(sizes: dict, n: int) -> dict:
    """Per-label quotas for a stratified subset of n: proportional (largest remainders), but every
    label gets at least one document when n >= the number of labels, so a small subset of
    PubMedQA (276 yes / 169 no / 55 maybe) still holds all three labels.

        q_l = floor(n·N_l/N), raised to 1 where 0; then the largest quotas give back the excess,
        or the largest fractional parts n·N_l/N − q_l take the remainder.
    Ties break by the larger group, then the label's text, never by dict order.
    """
    total = sum(sizes.values())
    quota = {lb: n * sz // total for lb, sz in sizes.items()}
    if n >= len(sizes):
        quota = {lb: max(1, q) for lb, q in quota.items()}
    while sum(quota.values()) > n:
        lb = max(quota, key=lambda k: (quota[k], sizes[k], str(k)))
        quota[lb] -= 1
    frac = sorted(sizes, key=lambda lb: (-(n * sizes[lb] / total - quota[lb]), -sizes[lb], str(lb)))
    i = 0
    while sum(quota.values()) < n:
        lb = frac[i % len(frac)]
        if quota[lb] < sizes[lb]:
            quota[lb] += 1
        i += 1
    return quota


def select_indices(docs, strata, n: int | None, seed_key: str) -> list[int]:
    """Seeded subset of document indices, stratified by `strata(doc)` when it is a small label set
    (`allocate`), else a seeded random sample. Never the first n: files like PubMedQA's test set
    are sorted by label. Sorted, so lm-eval reports them in file order; all when n is None/too big.
    """
    total = len(docs)
    idx = list(range(total))
    if n is None or n >= total:
        return idx
    shuffled = stable_shuffle(idx, seed_key)
    labels = [repr(strata(docs[i])) for i in idx] if strata else None
    if labels is None or not 1 < len(set(labels)) <= MAX_STRATA:
        return sorted(shuffled[:n])
    sizes: dict = {}
    for lb in labels:
        sizes[lb] = sizes.get(lb, 0) + 1
    quota = allocate(sizes, n)
    chosen = []
    for i in shuffled:
        if quota[labels[i]] > 0:
            quota[labels[i]] -= 1
            chosen.append(i)
    return sorted(chosen)


# ------------------------------------------------------------------ the lm-eval model

_HFLM_CLASS = None


def counting_hflm_class():
    """HFLM that also counts tokens and time spent in generation and in loglikelihood forwards."""
    global _HFLM_CLASS
    if _HFLM_CLASS is not None:
        return _HFLM_CLASS
    from lm_eval.models.huggingface import HFLM

    class CountingHFLM(HFLM):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.counters = {"gen_tokens": 0, "gen_prompt_tokens": 0, "gen_seconds": 0.0,
                             "ll_tokens": 0, "ll_seconds": 0.0, "gen_calls": 0, "ll_calls": 0}

        def _model_call(self, inps, attn_mask=None, labels=None):
            t0 = time.perf_counter()
            out = super()._model_call(inps, attn_mask, labels)
            self.counters["ll_seconds"] += time.perf_counter() - t0
            self.counters["ll_tokens"] += int(inps.numel())  # includes right padding of the batch
            self.counters["ll_calls"] += 1
            return out

        def _model_generate(self, context, max_length, stop, **generation_kwargs):
            t0 = time.perf_counter()
            mask = generation_kwargs.get("attention_mask")
            out = super()._model_generate(context, max_length, stop, **generation_kwargs)
            self.counters["gen_seconds"] += time.perf_counter() - t0
            new = out[:, context.shape[1]:]
            pad = self.tokenizer.pad_token_id
            self.counters["gen_tokens"] += int((new != pad).sum()) if pad is not None else int(new.numel())
            self.counters["gen_prompt_tokens"] += int(mask.sum()) if mask is not None else int(context.numel())
            self.counters["gen_calls"] += 1
            return out

    _HFLM_CLASS = CountingHFLM
    return CountingHFLM


def mixed_precision(precision: str, device) -> Any | None:
    import torch

    from arena.training.device import resolve_precision

    p = resolve_precision(precision, device)
    return torch.bfloat16 if p in ("bf16-autocast", "bf16") else None


def quiet_lm_eval(verbose: bool = False) -> None:
    level = logging.INFO if verbose else logging.ERROR
    for name in ("lm-eval", "lm_eval", "datasets"):
        logging.getLogger(name).setLevel(level)
    try:
        import datasets

        if not verbose:
            datasets.disable_progress_bars()
    except ImportError:
        pass


def _drop_langdetect(record: logging.LogRecord) -> bool:
    """IFEval's language checker logs every undetectable reply (a number string) on the root logger."""
    return not str(record.msg).startswith("Unable to detect language")


def _silent(orig, *args, **kwargs):
    kwargs["disable"] = True  # callers pass disable=... themselves, so a partial default would lose
    return orig(*args, **kwargs)


class _Progress:
    """lm-eval draws a progress bar per task while building prompts (27 for BBH): always hidden.
    The request bars ("Running generate_until requests") are kept when `show` is true."""

    def __init__(self, show: bool, verbose: bool = False):
        self.show = show
        self.verbose = verbose
        self.saved: list = []

    def __enter__(self):
        import functools

        import lm_eval.api.task as task_mod

        if not self.verbose:
            logging.getLogger().addFilter(_drop_langdetect)
        import lm_eval.models.huggingface as hf_mod

        mods = [task_mod] + ([] if self.show else [hf_mod])
        for m in mods:
            orig = m.tqdm
            self.saved.append((m, orig))
            m.tqdm = functools.partial(_silent, orig)
        return self

    def __exit__(self, *exc):
        for m, orig in self.saved:
            m.tqdm = orig
        logging.getLogger().removeFilter(_drop_langdetect)
        return False


class _Preserve:
    """Restore the caller's RNG streams and train/eval mode around an evaluation."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        import numpy as np
        import torch

        self.training = self.model.training if self.model is not None else None
        self.py = random.getstate()
        self.np = np.random.get_state()
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        return self

    def __exit__(self, *exc):
        import numpy as np
        import torch

        random.setstate(self.py)
        np.random.set_state(self.np)
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        if self.model is not None:
            self.model.train(self.training)
        return False


# ------------------------------------------------------------------ running

def build_subtasks(names: list[str], data_dir: str | None, options: TaskOptions, target=None) -> dict[str, list[Subtask]]:
    ctx = BuildContext(data_dir=data_dir, options=options, target=target)
    return {n: get_task(n).builder(ctx) for n in names}


def plan(names: list[str], data_dir: str | None, settings: RunSettings, target=None,
         select: dict[str, list[int]] | None = None) -> dict:
    """Build the lm-eval tasks and choose the documents: {"subtasks", "tasks", "samples", "available"}.

    Separate from `run_tasks` so the benchmark can export the identical tasks and documents to the
    plain `lm_eval` CLI. `select` ({lm-eval task: [doc indices]}) replaces the seeded subset of
    the tasks it names (tests use it to pick IFEval's sentence-counting prompts).
    """
    from lm_eval.tasks import TaskManager

    if "ifeval" in names:
        ensure_punkt(data_dir)
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
        lim = per_subtask_limit(settings.limit, len(sts))
        for st in sts:
            docs = loaded[st.name].eval_docs
            available[st.name] = len(docs)
            if select and st.name in select:
                samples[st.name] = sorted(select[st.name])
            else:
                samples[st.name] = select_indices(docs, td.strata, lim, f"eval/{st.name}/{settings.seed}")
    return {"subtasks": subtasks, "tasks": loaded, "samples": samples, "available": available, "task_manager": tm}


def run_tasks(model, tokenizer, names: list[str], data_dir: str | None, settings: RunSettings,
              target=None, verbose: bool = False, progress: bool = False,
              select: dict[str, list[int]] | None = None) -> dict:
    """Evaluate `model` on the arena tasks `names`; returns {"tasks": {name: result}, "engine": {...}}."""
    import lm_eval
    from lm_eval import simple_evaluate

    quiet_lm_eval(verbose)
    t0 = time.perf_counter()
    p = plan(names, data_dir, settings, target, select)
    t_plan = time.perf_counter() - t0
    device = next(model.parameters()).device
    chat = settings.chat_template
    if chat is None:
        chat = bool(getattr(tokenizer, "chat_template", None))
    lm = counting_hflm_class()(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size,
                               mixed_precision_dtype=mixed_precision(settings.precision, device))
    t1 = time.perf_counter()
    with _Preserve(model), _Progress(progress, verbose):
        out = simple_evaluate(lm, tasks=list(p["tasks"].values()),
                              samples=p["samples"] if settings.limit is not None or select else None,
                              task_manager=p["task_manager"], apply_chat_template=chat,
                              fewshot_as_multiturn=True, bootstrap_iters=0, log_samples=True)
    t_eval = time.perf_counter() - t1
    results = {}
    for name, sts in p["subtasks"].items():
        results[name] = summarize(get_task(name), sts, out["samples"], p, out.get("configs", {}))
        results[name]["settings"]["chat_template"] = chat
    c = dict(lm.counters)
    engine = {
        "lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else _version("lm_eval"),
        "plan_s": round(t_plan, 2), "eval_s": round(t_eval, 2),
        "chat_template": chat, "batch_size": settings.batch_size,
        "precision": "bf16-autocast" if lm.mixed_precision_dtype is not None else "fp32",
        "device": str(device),
        # tokens_per_s counts new tokens only; prefill of the prompts is in the same seconds
        "generation": {"tokens": c["gen_tokens"], "prompt_tokens": c["gen_prompt_tokens"], "seconds": round(c["gen_seconds"], 2),
                       "tokens_per_s": round(c["gen_tokens"] / c["gen_seconds"], 1) if c["gen_seconds"] else None,
                       "all_tokens_per_s": round((c["gen_tokens"] + c["gen_prompt_tokens"]) / c["gen_seconds"], 1)
                       if c["gen_seconds"] else None},
        "loglikelihood": {"tokens": c["ll_tokens"], "seconds": round(c["ll_seconds"], 2),
                          "tokens_per_s": round(c["ll_tokens"] / c["ll_seconds"], 1) if c["ll_seconds"] else None},
    }
    return {"tasks": results, "engine": engine}


def _version(pkg: str) -> str:
    import importlib.metadata as md

    return md.version(pkg)


def _units(samples: list[dict], metric: str) -> dict:
    """Per-document (y, k) of one metric; a list-valued metric (IFEval inst-level) is y of k."""
    doc_ids, y, k = [], [], []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        v = s[metric]
        doc_ids.append(int(s["doc_id"]))
        if isinstance(v, (list, tuple)):
            y.append(float(sum(bool(x) for x in v)))
            k.append(len(v))
        else:
            y.append(float(v))
            k.append(1)
    out = {"doc_ids": doc_ids, "y": y}
    if any(x != 1 for x in k):
        out["k"] = k
    return out


def _metric_entry(units: dict) -> dict:
    score, se = stats.ratio_mean_se(units["y"], units.get("k"))
    entry = {"score": score, "se": se, "n": len(units["y"])}
    if "k" in units:
        entry["n_units"] = int(sum(units["k"]))
    return entry


def _pick_filter(td, samples: list[dict]) -> str:
    present = {s["filter"] for s in samples}
    for f in td.filters:
        if f in present:
            return f
    return sorted(present)[0]


def _examples(samples: list[dict], metric: str, n: int = 2) -> list[dict]:
    out = []
    for s in samples[:n]:
        args = s["arguments"][0] if s.get("arguments") else None
        prompt = args[0] if isinstance(args, (list, tuple)) and args else str(args)
        resp = s["filtered_resps"][0] if s.get("filtered_resps") else None
        out.append({"doc_id": int(s["doc_id"]), "prompt_tail": str(prompt)[-300:],
                    "response": str(resp)[:300], "target": str(s.get("target"))[:200], metric: _plain(s[metric])})
    return out


def _plain(v):
    if isinstance(v, (list, tuple)):
        return [bool(x) for x in v]
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def summarize(td, subtasks: list[Subtask], all_samples: dict, p: dict, configs: dict) -> dict:
    """One benchmark's result from lm-eval's per-document samples (see stats for the formulas)."""
    metrics = (td.metric, *td.metrics)
    per_sub = {}
    chosen_filter = None
    examples = []
    empty = 0
    for st in subtasks:
        ss = all_samples.get(st.name, [])
        if not ss:
            raise RuntimeError(f"lm-eval returned no samples for {st.name}")
        chosen_filter = _pick_filter(td, ss)
        ss = [s for s in ss if s["filter"] == chosen_filter]
        if td.generate:
            empty += sum(1 for s in ss if not str((s.get("resps") or [[""]])[0][0]).strip())
        per_sub[st.name] = {m: _units(ss, m) for m in metrics if m in ss[0]}
        if len(examples) < 2:
            examples += _examples(ss, td.metric, 2 - len(examples))
    cfg0 = configs.get(subtasks[0].name, {})
    gen = (cfg0.get("generation_kwargs") or {}) if td.generate else {}
    settings = {
        "lm_eval_tasks": [st.name for st in subtasks], "filter": chosen_filter,
        "num_fewshot": cfg0.get("num_fewshot"), "max_gen_toks": gen.get("max_gen_toks"),
        "until": gen.get("until"), "n_available": sum(p["available"][st.name] for st in subtasks),
    }
    res: dict = {"benchmark": td.name, "metric": td.metric, "settings": settings, "examples": examples}
    if td.generate:
        res["empty_responses"] = empty  # raw generations that were blank (e.g. chat template off)
    if not td.grouped:
        units = per_sub[subtasks[0].name]
        res.update(_metric_entry(units[td.metric]))
        res["metrics"] = {m: _metric_entry(u) for m, u in units.items()}
        res["units"] = units[td.metric]
        return res
    subs = {}
    for name, units in per_sub.items():
        subs[name] = {**_metric_entry(units[td.metric]), "units": units[td.metric]}
    score, se = stats.average((s["score"], s["se"]) for s in stats.fill_small_se(list(subs.values())))
    res.update({"score": score, "se": se, "n": sum(s["n"] for s in subs.values()), "n_subtasks": len(subs),
                "aggregation": "unweighted mean over subtasks", "subtasks": subs})
    return res
