"""Public evaluation API: score a model, score the (cached) base, compare the two.

    evaluate_model(model, tokenizer, suites, target, limit, data_dir, seed, device, ...) -> result
    base_scores(model_name, suites, target, limit, data_dir, seed, device, ...)         -> result (cached)
    compare(base_result, tuned_result)                                                  -> gains/forgetting

A result is a JSON-able dict: {"tasks": {benchmark: {score, se, n, metric, metrics, units, settings,
examples}}, "axes": {"general"|"target": {score, se, benchmarks, missing, complete}}, "proxies":
{"general_nll", "target_nll"}, "settings", "engine", "timing", "model"}. See docs/evaluation.md.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from arena.components import TARGETS
from arena.errors import ConfigError
from arena.evaluation import convert, stats
from arena.evaluation import proxies as px
from arena.evaluation.build import check_available, data_fingerprint
from arena.evaluation.cache import BaseCache, model_fingerprint
from arena.evaluation.preserve import PreservedState
from arena.evaluation.proxies import ProxySettings
from arena.evaluation.runner import run_tasks
from arena.evaluation.settings import RunSettings, limit_for
from arena.evaluation.suites import resolve_tasks
from arena.evaluation.tasks import TASKS_VERSION, get_task
from arena.schema import build, to_dict

Log = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def make_target(target, data_dir: str | None, options: dict | None = None):
    """A Target instance from a name (default or given options), or the instance itself."""
    if target is None or not isinstance(target, str):
        return target
    cls = TARGETS.get(target, field="target")
    return cls(build(cls.Options, options or {}, prefix="target"), data_dir)


def _target_for(suites: list[str], target, data_dir, options):
    """The target: given, or named by a suite (suites: [arith] means the arith target)."""
    named = [x for x in suites if x in TARGETS]
    if len(named) > 1:
        raise ConfigError("suites", suites, "name at most one target suite")
    tgt = make_target(target, data_dir, options)
    if named:
        if tgt is not None and tgt.name != named[0]:
            raise ConfigError("suites", named[0], f"conflicts with target {tgt.name!r}; use the suite 'target'")
        if tgt is None:
            tgt = make_target(named[0], data_dir, options)
    return tgt


def _settings(settings: RunSettings | None, limit, seed, batch_size) -> RunSettings:
    s = settings or RunSettings()
    changes: dict[str, Any] = {"limit": limit, "seed": seed}
    if batch_size is not None:
        changes["batch_size"] = batch_size
    return dataclasses.replace(s, **changes)


def _proxy_settings(proxies) -> ProxySettings | None:
    if proxies is True:
        return ProxySettings()
    if proxies is False or proxies is None:
        return None
    return proxies


def _axis_members(suites, tgt, plan: dict[str, list[str]]) -> dict[str, list[str]]:
    """The full definition of each axis the plan touches (a --tasks subset leaves it partial)."""
    full = resolve_tasks(suites, tgt, None)
    return {axis: full[axis] for axis in plan if axis in full}


def _axes(task_results: dict, members: dict[str, list[str]]) -> dict:
    return {axis: stats.axis(task_results, ms) for axis, ms in members.items()}


def _settings_record(s: RunSettings, names: list[str], data_dir, chat, precision) -> dict:
    o = s.options
    return {"limit": s.limit, "seed": s.seed, "batch_size": s.batch_size, "chat_template": chat,
            "precision": precision, "engine": s.engine, "bbh_variant": o.bbh_variant, "bbh_shots": o.bbh_shots,
            "max_gen_toks": {n: get_task(n).gen_cap(o) for n in names if get_task(n).generate},
            "data_dir": data_dir, "tasks_version": TASKS_VERSION,
            "limit_rule": "per benchmark; BBH splits it evenly over its 27 subtasks (rounded up)",
            "subset": "seeded, stratified by label where the task has a small label set"}


def _resolve_device(device, model=None):
    import torch

    from arena.training.device import pick_device  # imports torch

    if device is None:
        return next(model.parameters()).device if model is not None else pick_device("auto")
    return device if isinstance(device, torch.device) else pick_device(str(device))


def _chat_on(s: RunSettings, tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None)) if s.chat_template is None else bool(s.chat_template)


def _precision(s: RunSettings, device) -> str:
    from arena.training.device import resolve_precision  # imports torch

    p = resolve_precision(s.precision, device)
    return "bf16-autocast" if p in ("bf16", "bf16-autocast") else "fp32"


def evaluate_model(model, tokenizer, suites: list[str], target: str | Any | None = None,
                   limit: int | None = None, data_dir: str | None = None, seed: int = 0, device=None, *,
                   tasks: list[str] | None = None, settings: RunSettings | None = None,
                   batch_size: int | None = None, proxies: bool | ProxySettings = True,
                   reference: dict | None = None, target_options: dict | None = None,
                   model_id: dict | None = None, log: Log = _quiet, verbose: bool = False,
                   progress: bool = False) -> dict:
    """Score an in-memory model (base, loaded checkpoint or the model being trained).

    suites: "general", "target" (needs `target`) or a target name; `tasks` keeps a subset.
    limit: documents per benchmark (seeded, stratified subset; None = all). Nothing is written to
    disk except cached converted data files. `reference`: the base model's general-prompt
    responses for the NLL proxy (`proxies.reference_responses`); without it the model's own
    responses are generated (right for a base model, wrong for a tuned one: pass the base's).
    The caller's RNG state and train/eval mode are preserved.
    """
    with PreservedState(model):
        return _evaluate_model(model, tokenizer, suites, target, limit, data_dir, seed, device, tasks, settings,
                               batch_size, proxies, reference, target_options, model_id, log, verbose, progress)


def _task_plan(suites, target, data_dir, target_options, tasks, settings, limit, seed, batch_size):
    """(target, task plan per axis, axis members, task names, settings); every task's data is checked."""
    tgt = _target_for(suites, target, data_dir, target_options)
    plan = resolve_tasks(suites, tgt, tasks)
    names = [n for ns in plan.values() for n in ns]
    check_available(names, data_dir)
    return tgt, plan, _axis_members(suites, tgt, plan), names, _settings(settings, limit, seed, batch_size)


def _evaluate_model(model, tokenizer, suites, target, limit, data_dir, seed, device, tasks, settings, batch_size,
                    proxies, reference, target_options, model_id, log, verbose, progress) -> dict:
    t0 = time.perf_counter()
    tgt, plan, members, names, s = _task_plan(suites, target, data_dir, target_options, tasks, settings, limit,
                                              seed, batch_size)
    dev = _resolve_device(device, model)
    from arena.generation.engine import check_available  # imports torch

    check_available(s.engine, model, dev, "eval.engine")  # an engine that cannot run here fails before lm-eval starts
    if next(model.parameters()).device != dev:
        model.to(dev)
    chat, precision = _chat_on(s, tokenizer), _precision(s, dev)
    log(f"evaluating {', '.join(names)} (limit {s.limit}, seed {s.seed}, batch {s.batch_size}, {precision}, "
        f"chat template {'on' if chat else 'off'})")
    run = run_tasks(model, tokenizer, names, data_dir, s, tgt, verbose=verbose, progress=progress)
    result = {"suites": list(suites), "target": getattr(tgt, "name", None), "tasks": run["tasks"],
              "axes": _axes(run["tasks"], members), "plan": plan, "axis_members": members,
              "settings": _settings_record(s, names, data_dir, chat, precision), "engine": run["engine"],
              "model": model_id}
    ps = _proxy_settings(proxies)
    if ps is not None and data_dir is not None:
        tp = time.perf_counter()
        ref = reference or px.reference_responses(model, tokenizer, data_dir, ps, dev, precision, model_id, log, engine=s.engine)
        result["proxies"] = {"general_nll": px.general_nll(model, tokenizer, ref, dev, precision, ps)}
        if tgt is not None:
            result["proxies"]["target_nll"] = px.target_nll(model, tokenizer, tgt, dev, precision, ps)
        result["proxies"]["settings"] = dataclasses.asdict(ps)
        result["proxies"]["seconds"] = round(time.perf_counter() - tp, 2)
    result["timing"] = {"total_s": round(time.perf_counter() - t0, 2)}
    return result


# ------------------------------------------------------------------ the base model, cached

def task_key_fields(name: str, fp: dict, s: RunSettings, data_dir, tgt, chat: bool, precision: str, device_type: str) -> dict:
    """Everything that can change `name`'s score on the model `fp` (see arena.evaluation.cache)."""
    import importlib.metadata as md

    td = get_task(name)
    o = s.options
    f: dict = {"model": fp, "task": name, "task_version": td.version, "tasks_version": TASKS_VERSION,
               "lm_eval": md.version("lm_eval"), "data": data_fingerprint(name, data_dir),
               "limit": limit_for(s.limit, name), "seed": s.seed,
               "gen": {"max_gen_toks": td.gen_cap(o) if td.generate else None, "chat_template": chat,
                       "batch_size": s.batch_size, "precision": precision, "device": device_type,
                       **({"engine": s.engine} if td.generate and s.engine != "hf" else {})}}
    if td.options:  # the TaskOptions fields the task reads (BBH: variant, shots)
        f[name] = {key: getattr(o, option) for key, option in td.options.items()}
    if td.generated_by is not None:
        f[name] = convert.generated_key(convert.generating_target(td.generated_by, tgt), o)
    return f


def base_scores(model_name: str, suites: list[str], target: str | Any | None = None,
                limit: int | None = None, data_dir: str | None = None, seed: int = 0, device=None, *,
                tasks: list[str] | None = None, settings: RunSettings | None = None,
                batch_size: int | None = None, proxies: bool | ProxySettings = True,
                target_options: dict | None = None, revision: str | None = None,
                cache: bool = True, log: Log = _quiet, verbose: bool = False,
                progress: bool = False) -> dict:
    """`evaluate_model` for a base model by name, computed once per key and then read from the cache.

    The model is loaded only if some benchmark (or proxy) is missing from the cache. The result
    has "cache": {"hits": [...], "misses": [...], "dir"} besides the usual fields, and
    "reference" (the base's general-prompt responses, to pass to `evaluate_model` for a tuned model).
    The caller's RNG state is preserved.
    """
    with PreservedState(None):
        return _base_scores(model_name, suites, target, limit, data_dir, seed, device, tasks, settings, batch_size,
                            proxies, target_options, revision, cache, log, verbose, progress)


def _base_scores(model_name, suites, target, limit, data_dir, seed, device, tasks, settings, batch_size, proxies,
                 target_options, revision, cache, log, verbose, progress) -> dict:
    # the loader imports torch and transformers
    from arena.models.loader import load_model, load_tokenizer

    t0 = time.perf_counter()
    tgt, plan, members, names, s = _task_plan(suites, target, data_dir, target_options, tasks, settings, limit,
                                              seed, batch_size)
    dev = _resolve_device(device)
    fp = model_fingerprint(model_name, revision)
    tok = load_tokenizer(model_name, revision)
    chat, precision = _chat_on(s, tok), _precision(s, dev)
    bc = BaseCache(enabled=cache)
    fields = {n: task_key_fields(n, fp, s, data_dir, tgt, chat, precision, dev.type) for n in names}
    results = {n: bc.get(n, fields[n]) for n in names}
    missing = [n for n in names if results[n] is None]
    ps = _proxy_settings(proxies) if data_dir is not None else None
    proxy_fields: dict = {}
    proxy_results: dict = {}
    if ps is not None:
        base = {"model": fp, "precision": precision, "device": dev.type, "proxy": dataclasses.asdict(ps),
                "proxy_version": px.PROXY_VERSION}
        proxy_fields["general_nll"] = {**base, "reference": px.reference_key(data_dir, ps, precision, fp, device_type=dev.type)}
        if tgt is not None:
            proxy_fields["target_nll"] = {**base, "target": tgt.name, "target_options": to_dict(tgt.options),
                                          "data": _target_files(tgt)}
        for k, f in proxy_fields.items():
            proxy_results[k] = bc.get(f"proxy:{k}", f)
    reference = None
    model = None
    engine = None

    def loaded():
        nonlocal model
        if model is None:
            log(f"loading base model {model_name}")
            m, _, _ = load_model(model_name, revision)
            model = m.to(dev)
        return model

    if missing:
        log(f"base {model_name}: evaluating {', '.join(missing)} (not cached)")
        run = run_tasks(loaded(), tok, missing, data_dir, s, tgt, verbose=verbose, progress=progress)
        engine = run["engine"]
        for n in missing:
            results[n] = {**run["tasks"][n], "cached": False}
            bc.put(n, fields[n], run["tasks"][n])
    for n in names:
        results[n].setdefault("cached", True)
    if ps is not None:
        # The reference texts are cached on their own, so a cache hit on the NLL values still hands
        # back the texts a tuned model must be scored on.
        reference = px.cached_reference(px.reference_key(data_dir, ps, precision, fp, device_type=dev.type))
        if reference is None:
            reference = px.reference_responses(loaded(), tok, data_dir, ps, dev, precision, fp, log)
        if proxy_results.get("general_nll") is None:
            proxy_results["general_nll"] = px.general_nll(loaded(), tok, reference, dev, precision, ps)
            bc.put("proxy:general_nll", proxy_fields["general_nll"], proxy_results["general_nll"])
        if tgt is not None and proxy_results.get("target_nll") is None:
            proxy_results["target_nll"] = px.target_nll(loaded(), tok, tgt, dev, precision, ps)
            bc.put("proxy:target_nll", proxy_fields["target_nll"], proxy_results["target_nll"])
    result = {"suites": list(suites), "target": getattr(tgt, "name", None), "tasks": results,
              "axes": _axes(results, members), "plan": plan, "axis_members": members,
              "settings": _settings_record(s, names, data_dir, chat, precision), "engine": engine,
              "model": fp, "cache": {"hits": list(bc.hits), "misses": list(bc.misses), "dir": str(bc.root)}}
    if ps is not None:
        result["proxies"] = {**proxy_results, "settings": dataclasses.asdict(ps)}
        result["reference"] = reference
    result["timing"] = {"total_s": round(time.perf_counter() - t0, 2)}
    return result


def _target_files(tgt) -> dict:
    try:
        info = tgt.describe()
    except Exception:  # describe() is informational; the options already identify generated targets
        return {}
    return {rel: v.get("sha256") for rel, v in (info.get("files") or {}).items()}


# ------------------------------------------------------------------ comparison

def _delta(b: dict, t: dict) -> dict:
    if "subtasks" in b and "subtasks" in t:
        parts, paired = [], True
        for name in t["subtasks"]:
            if name not in b["subtasks"]:
                continue
            sb, st = b["subtasks"][name], t["subtasks"][name]
            d = stats.units_delta(sb.get("units"), st.get("units"))
            if d is None:
                paired = False
                d = (*stats.independent_delta((sb["score"], sb["se"]), (st["score"], st["se"])), st["n"])
            parts.append({"score": d[0], "se": d[1], "n": d[2]})
        parts = stats.fill_small_se(parts, difference=True) if paired else parts
        delta, se = stats.average((p["score"], p["se"]) for p in parts)
        return {"delta": delta, "se": se, "paired": paired, "n": sum(p["n"] for p in parts)}
    d = stats.units_delta(b.get("units"), t.get("units"))
    if d is not None:
        return {"delta": d[0], "se": d[1], "paired": True, "n": d[2]}
    delta, se = stats.independent_delta((b["score"], b["se"]), (t["score"], t["se"]))
    return {"delta": delta, "se": se, "paired": False, "n": min(b.get("n", 0), t.get("n", 0))}


def compare(base_result: dict, tuned_result: dict) -> dict:
    """Per-benchmark change tuned − base (paired on the same documents when possible), the axes'
    changes, target gain (= Δ target axis), forgetting (= base general − tuned general), and the
    proxies' changes (ΔCE on general text; Δ target NLL, negative = learned). SEs as in stats.
    """
    out: dict = {"benchmarks": {}, "axes": {}, "proxies": {}}
    bt, tt = base_result.get("tasks", {}), tuned_result.get("tasks", {})
    for name, t in tt.items():
        if name not in bt:
            continue
        b = bt[name]
        out["benchmarks"][name] = {"base": b["score"], "base_se": b["se"], "tuned": t["score"], "tuned_se": t["se"],
                                   **_delta(b, t)}
    for axis, ax in (tuned_result.get("axes") or {}).items():
        members = [m for m in ax["benchmarks"] if m in out["benchmarks"]]
        if not members:
            continue
        delta, se = stats.average((out["benchmarks"][m]["delta"], out["benchmarks"][m]["se"]) for m in members)
        b_ax = stats.axis(bt, members)
        out["axes"][axis] = {"base": b_ax["score"], "tuned": stats.axis(tt, members)["score"], "delta": delta,
                             "se": se, "benchmarks": members, "complete": ax.get("complete", False)
                             and len(members) == len(ax["benchmarks"])}
    if "target" in out["axes"]:
        a = out["axes"]["target"]
        out["target_gain"] = {"value": a["delta"], "se": a["se"]}
    if "general" in out["axes"]:
        a = out["axes"]["general"]
        out["forgetting"] = {"value": -a["delta"], "se": a["se"]}
    bp, tp = base_result.get("proxies") or {}, tuned_result.get("proxies") or {}
    for key in ("general_nll", "target_nll"):
        if key in bp and key in tp:
            d = stats.units_delta(bp[key].get("units"), tp[key].get("units"))
            if d is None:
                d = (*stats.independent_delta((bp[key]["score"], bp[key]["se"]), (tp[key]["score"], tp[key]["se"])),
                     tp[key]["n"])
            out["proxies"][key] = {"base": bp[key]["score"], "tuned": tp[key]["score"], "delta": d[0], "se": d[1], "n": d[2]}
    return out


def strip_units(result: dict) -> dict:
    """A copy without the per-document units and cached reference texts (for compact printing)."""
    import copy

    r = copy.deepcopy(result)
    r.pop("reference", None)
    for t in (r.get("tasks") or {}).values():
        t.pop("units", None)
        for s in (t.get("subtasks") or {}).values():
            s.pop("units", None)
    for p in (r.get("proxies") or {}).values():
        if isinstance(p, dict):
            p.pop("units", None)
    return r
