"""A small general/target probe to run every N training steps, on the in-memory model.

    probe = make_step_probe(cfg, tokenizer, target, device, precision)
    row = probe(model, step)      # -> {"step", "general_nll", "general_nll_delta", ..., "probe_s"}

What it measures (cheap, continuous, paired against the base):
- general NLL: per-token NLL of the base model's greedy responses to a few general prompts
  (IFEval + NQ-open; docs/design.md "Pilot"), and its change from the base (ΔCE, paired SE);
- target NLL: per-token NLL of held-out target answers, and its change from the base;
- optionally a few lm-eval tasks with a small seeded limit (e.g. ["arith"]): accuracy.

The base reference texts and the base NLLs are computed once when the probe is made (loading the
base model by name if they are not cached yet) and cached like the base scores. Calling the probe
restores the model's train/eval mode and every RNG stream, so it does not change the run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from arena.errors import ConfigError
from arena.evaluation import proxies as px
from arena.evaluation import stats
from arena.evaluation.cache import BaseCache, model_fingerprint
from arena.evaluation.preserve import PreservedState
from arena.evaluation.proxies import ProxySettings
from arena.evaluation.runner import run_tasks
from arena.evaluation.settings import RunSettings, TaskOptions
from arena.targets.base import Example


@dataclass
class StepProbeSettings:
    general_prompts: int = 16  # half IFEval, half NQ-open
    target_examples: int = 32
    max_new_tokens: int = 96  # cap of the base model's reference responses
    tasks: list = field(default_factory=list)  # lm-eval tasks scored at each probe, e.g. ["arith"]
    limit: int = 16  # documents per lm-eval task
    seed: int | None = None  # None: the run's probe.seed (held-out selection fixed across a sweep)
    batch_size: int = 16
    max_gen_toks: dict = field(default_factory=lambda: {"arith": 16, "ifeval": 128, "nq_open": 16, "bbh": 32})


def _get(obj: Any, path: str, default=None):
    cur = obj
    for part in path.split("."):
        if cur is None:
            return default
        cur = cur.get(part) if isinstance(cur, dict) else getattr(cur, part, None)
    return default if cur is None else cur


def _settings_from(cfg_like, overrides: dict | None) -> StepProbeSettings:
    raw = _get(cfg_like, "step_probe") or _get(cfg_like, "eval.step_probe") or {}
    if dataclasses.is_dataclass(raw):
        raw = dataclasses.asdict(raw)
    raw = {**dict(raw), **(overrides or {})}
    known = {f.name for f in dataclasses.fields(StepProbeSettings)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError("step_probe", sorted(unknown), f"known fields: {', '.join(sorted(known))}")
    return StepProbeSettings(**raw)


def make_step_probe(cfg_like, tokenizer, target, device, precision: str, *, base_model=None,
                    overrides: dict | None = None, log: Callable[[str], None] = print) -> Callable[[Any, int], dict]:
    """Build the probe. `cfg_like`: a RunConfig (or dict / namespace with the same fields) — read are
    model.name, model.revision, data_dir, probe.seed and an optional `step_probe` mapping of
    StepProbeSettings fields (`overrides` wins over it). `target`: the run's Target instance.
    `base_model`: the untrained model, if the caller has it, to avoid loading it again.
    """
    sp = _settings_from(cfg_like, overrides)
    seed = sp.seed if sp.seed is not None else int(_get(cfg_like, "probe.seed", 1234))
    name = _get(cfg_like, "model.name", "smollm2-135m-instruct")
    revision = _get(cfg_like, "model.revision")
    data_dir = _get(cfg_like, "data_dir")
    n_if = sp.general_prompts // 2
    ps = ProxySettings(n_ifeval=n_if, n_nq=sp.general_prompts - n_if, max_new_tokens=sp.max_new_tokens,
                       target_examples=sp.target_examples, seed=seed, batch_size=sp.batch_size)
    p_prec = "bf16-autocast" if precision in ("bf16", "bf16-autocast") else "fp32"
    fp = model_fingerprint(name, revision)
    holder: dict = {"model": base_model}

    def base():
        if holder["model"] is None:
            from arena.models.loader import load_model

            log(f"step probe: loading base model {name} for the reference texts")
            holder["model"] = load_model(name, revision)[0].to(device)
        return holder["model"]

    general_ex: list[Example] = []
    if data_dir and sp.general_prompts > 0:
        ref = px.cached_reference(px.reference_key(data_dir, ps, p_prec, fp, device_type=px.device_kind(device)))
        if ref is None:
            with PreservedState(base()):
                ref = px.reference_responses(base(), tokenizer, data_dir, ps, device, p_prec, fp, log)
        general_ex = [Example(prompt=it["prompt"], response=it["response"]) for it in ref["items"]]
    target_ex = target.heldout_examples(sp.target_examples, seed) if target is not None and sp.target_examples else []

    bc = BaseCache()
    key = {"model": fp, "probe": dataclasses.asdict(ps), "precision": p_prec, "device": str(getattr(device, "type", device)),
           "general": [(e.prompt, e.response) for e in general_ex], "target": [(e.prompt, e.response) for e in target_ex]}
    base_vals = bc.get("probe:base", key)
    if base_vals is None:
        m = base()
        with PreservedState(m):
            base_vals = {"general": px.nll_entry(m, tokenizer, general_ex, device, p_prec, ps) if general_ex else None,
                         "target": px.nll_entry(m, tokenizer, target_ex, device, p_prec, ps) if target_ex else None}
        bc.put("probe:base", key, base_vals)
    holder["model"] = None  # free the base copy; the probe only needs its numbers from here on

    def probe(model, step: int) -> dict:
        t0 = time.perf_counter()
        row: dict = {"step": int(step)}
        with PreservedState(model):
            for key_, ex in (("general", general_ex), ("target", target_ex)):
                if not ex:
                    continue
                cur = px.nll_entry(model, tokenizer, ex, device, p_prec, ps)
                row[f"{key_}_nll"] = cur["score"]
                row[f"{key_}_nll_se"] = cur["se"]
                b = base_vals.get(key_)
                if b:
                    d = stats.units_delta(b["units"], cur["units"])
                    if d is not None:
                        row[f"{key_}_nll_delta"], row[f"{key_}_nll_delta_se"] = d[0], d[1]
            if sp.tasks:
                rs = RunSettings(limit=sp.limit, seed=seed, batch_size=sp.batch_size, precision=p_prec,
                                 options=TaskOptions(max_gen_toks=dict(sp.max_gen_toks)))
                res = run_tasks(model, tokenizer, list(sp.tasks), data_dir, rs, target)["tasks"]
                for tname, r in res.items():
                    row[tname] = r["score"]
                    row[f"{tname}_se"] = r["se"]
                    row[f"{tname}_n"] = r["n"]
        row["probe_s"] = round(time.perf_counter() - t0, 3)
        return row

    probe.settings = sp  # type: ignore[attr-defined]
    probe.base = {k: (v["score"] if v else None) for k, v in base_vals.items()}  # type: ignore[attr-defined]
    return probe
