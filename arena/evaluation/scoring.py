"""One benchmark's result from lm-eval's per-document samples.

Scores and standard errors are recomputed from the per-document metrics (`arena.evaluation.stats`),
so every benchmark has n and a SE, and two models can be compared paired on the same documents.
A grouped benchmark (BBH) is the unweighted mean of its subtasks, each with its own SE.
"""

from __future__ import annotations

from arena.evaluation import stats
from arena.evaluation.build import Subtask
from arena.evaluation.tasks import TaskDef
from arena.results.stats import ratio_mean_se


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
    score, se = ratio_mean_se(units["y"], units.get("k"))
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


def task_result(td: TaskDef, subtasks: list[Subtask], all_samples: dict, available: dict[str, int],
                configs: dict) -> dict:
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
        "until": gen.get("until"), "n_available": sum(available[st.name] for st in subtasks),
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
