"""Why a run forgets: weight- and activation-space diagnostics of one finished run (docs/design.md "Diagnostics").

For each chosen Linear module (default: layers ≈ n/3 and 2n/3 × {q,k,v,down}_proj) with base weight
W0 and merged tuned weight W1 (adapters merged in fp32, then ΔW = W1 − W0, so OFT, BOFT, VeRA, DoRA
and IA3, which are not additive in their own parameters, are handled like everything else), every
registered diagnostic metric (arena.analysis.metrics: CSD on "general" and "target" prompts and
G/T, Procrustes, Gram distortion, CKA, the spectral profile of ΔW against W0). The metric
definitions live in drift.py / geometry.py / spectra.py; this module only feeds them.

The base side (capturing the base model's activations) is the same for every run of a sweep and is
cached on disk (capture_cache.py); the per-run side is one forward of the tuned model up to the
deepest chosen module, plus the metrics. Results go into the run's record.json under "diagnostics".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from arena.analysis.capture import (
    Caps,
    capture_activations,
    capture_token_ids,
    check_finite,
    tokenizer_pad_id,
)
from arena.analysis.capture_cache import cached_capture
from arena.analysis.module_metrics import (
    Timer,
    metric_timers,
    module_metrics,
    summarize_modules,
)
from arena.analysis.module_select import resolve_modules
from arena.analysis.prompts import general_prompts, proxy_overlap, target_prompts
from arena.analysis.settings import DiagnosticsSettings
from arena.components import build_components
from arena.config import resolve_data_dir
from arena.errors import ArenaError
from arena.evaluation.cache import model_fingerprint
from arena.models.loader import load_model
from arena.runs import load_run_model, read_run_config, set_record_key
from arena.training.device import pick_device


def _weight(model, name: str) -> torch.Tensor:
    try:
        mod = model.get_submodule(name)
    except AttributeError:
        raise ArenaError(f"tuned model has no module {name!r} (did the merge return a different architecture?)") from None
    return mod.weight.detach().float().cpu()


def compute_diagnostics(base_model, tuned_model, tokenizer, prompt_sets: dict[str, Sequence[str]],
                        modules: Sequence[str], model_key: dict, *, caps: Caps | None = None,
                        precision: str = "bf16-autocast", device=None, use_cache: bool = True,
                        cache_dir: Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Diagnostics of `tuned_model` against `base_model` (both plain, merged models) on the prompt sets.

    Works for any two models of the same architecture; `model_key` identifies the base model for the
    activation cache.
    """
    timer = Timer()
    caps = caps or Caps()
    base_caps, tuned_caps, info = {}, {}, {}
    for d, prompts in prompt_sets.items():
        with timer("capture_base"):
            base_caps[d] = cached_capture(base_model, tokenizer, prompts, modules, model_key, caps=caps,
                                          precision=precision, device=device, use_cache=use_cache, cache_dir=cache_dir)
        with timer("capture_tuned"):
            enc = capture_token_ids(tokenizer, prompts, caps)
            tuned_caps[d] = capture_activations(tuned_model, enc, modules, pad_id=tokenizer_pad_id(tokenizer),
                                                device=device, precision=precision, inputs=False)
        check_finite(tuned_caps[d], f"tuned model on {d} prompts")
        if tuned_caps[d].lengths != base_caps[d].lengths:
            raise ArenaError(f"{d} prompts: the base capture has {base_caps[d].n_tokens} tokens in "
                             f"{base_caps[d].n_prompts} prompts, the tuned one {tuned_caps[d].n_tokens} in "
                             f"{tuned_caps[d].n_prompts}; they must tokenize identically")
        info[d] = {"prompts": base_caps[d].n_prompts, "tokens": base_caps[d].n_tokens, "base_cached": base_caps[d].cached,
                   "common_prefix_tokens": enc.common_prefix,
                   # share of stored rows that repeat the common prefix (identical in every prompt)
                   "repeated_prefix_share": round(sum(enc.common_prefix - k for k in enc.skip[1:])
                                                  / max(1, base_caps[d].n_tokens), 4)}
        log(f"{d}: {info[d]['prompts']} prompts, {info[d]['tokens']} tokens; base activations "
            f"{'from cache' if base_caps[d].cached else 'captured'} in {base_caps[d].seconds:.1f}s, "
            f"tuned in {tuned_caps[d].seconds:.1f}s")
    per_module = {}
    for name in modules:
        per_module[name] = module_metrics(name, _weight(base_model, name), _weight(tuned_model, name),
                                          base_caps, tuned_caps, timer)
    timings = {f"{k}_s": round(v, 3) for k, v in timer.seconds.items()}
    timings["metrics_s"] = round(sum(timer.seconds.get(k, 0.0) for k in metric_timers()), 3)
    return {"modules": per_module, "summary": summarize_modules(per_module), "distributions": info,
            "settings": {"modules": list(modules), **caps.to_dict(), "precision": precision},
            "timings": timings}


def run_prompt_sets(cfg, caps: Caps, data_dir: str | None = None) -> dict[str, list[str]]:
    """The "general" and "target" prompt lists of a run (enough prompts to fill the caps)."""
    data_dir = data_dir or cfg.data_dir or resolve_data_dir(None)
    _, target, _ = build_components(cfg, check_data=False)
    n = caps.max_prompts
    return {"general": general_prompts(data_dir, (n + 1) // 2, cfg.probe.seed)[:n],
            "target": target_prompts(target, n, cfg.probe.seed)}


def analyze_run(run_dir, settings: DiagnosticsSettings, *, device: str = "cpu", cache_dir: Path | None = None,
                write: bool = True, log: Callable[[str], None] = print) -> dict:
    """Diagnose a finished run folder; stores the result under "diagnostics" in its record.json."""
    s = settings
    modules, max_prompts, max_tokens, max_length = s.modules, s.max_prompts, s.max_tokens, s.max_length
    shared_prefix, precision, data_dir, use_cache = s.shared_prefix, s.precision, s.data_dir, s.use_cache
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    caps = Caps(max_prompts, max_tokens, max_length, shared_prefix, s.prompt_format)
    cfg = read_run_config(run_dir)
    dev = pick_device(device)
    base, tok, _ = load_model(cfg.model.name, cfg.model.revision, cfg.model.trust_remote_code)
    mods = resolve_modules(base, modules)
    t_base = time.perf_counter()
    prompt_sets = run_prompt_sets(cfg, caps, data_dir)
    t_prompts = time.perf_counter()
    tuned, _, _ = load_run_model(run_dir, merged=True)
    t_tuned = time.perf_counter()
    log(f"loaded base + tuned ({cfg.method.name}) in {t_tuned - t0:.1f}s; {len(mods)} modules")
    diag = compute_diagnostics(base.to(dev), tuned.to(dev), tok, prompt_sets, mods,
                               model_fingerprint(cfg.model.name, cfg.model.revision),
                               caps=caps, precision=precision, device=dev, use_cache=use_cache,
                               cache_dir=cache_dir, log=log)
    diag["timings"] = {"load_base_s": round(t_base - t0, 3), "prompts_s": round(t_prompts - t_base, 3),
                       "load_tuned_s": round(t_tuned - t_prompts, 3), **diag["timings"],
                       "total_s": round(time.perf_counter() - t0, 3)}
    diag["method"] = cfg.method.name
    # the general NLL proxy's prompts among the diagnostics' (0 by construction: arena/analysis/prompts.py)
    diag["distributions"]["general"]["proxy_overlap"] = proxy_overlap(
        prompt_sets["general"][: diag["distributions"]["general"]["prompts"]], data_dir or cfg.data_dir or resolve_data_dir(None),
        cfg.probe.seed)
    if write:
        set_record_key(run_dir, "diagnostics", diag)
    return diag
