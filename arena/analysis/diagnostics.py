"""Why a run forgets: weight- and activation-space diagnostics of one finished run (DESIGN.md "Diagnostics").

For each chosen Linear module (default: layers ≈ n/3 and 2n/3 × {q,k,v,down}_proj) with base weight
W0 and merged tuned weight W1 (adapters merged in fp32, then ΔW = W1 − W0, so OFT, BOFT, VeRA, DoRA
and IA3, which are not additive in their own parameters, are handled like everything else):
- CSD abs / rel / un of ΔW on the base model's inputs, on "general" and "target" prompts, and G/T;
- the spectral profile of ΔW against W0;
- Procrustes residual (aligned and raw), Gram distortion and linear CKA of the base vs tuned module
  outputs on the same tokens, per distribution.
The metric definitions live in geometry.py / drift.py / spectra.py; this module only feeds them.

The base side (capturing the base model's activations) is the same for every run of a sweep and is
cached on disk (capture.py); the per-run side is one forward of the tuned model up to the deepest
chosen module, plus the metrics. Results go into the run's record.json under "diagnostics".
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from arena.analysis.capture import (
    Caps,
    Capture,
    cached_capture,
    capture_activations,
    check_finite,
    encode_prompts,
    tokenizer_pad_id,
)
from arena.analysis.settings import DiagnosticsSettings
from arena.errors import ArenaError

DISTS = ("general", "target")
# The per-module scalars averaged into the summary, as (flat name, path into the module dict).
SUMMARY_KEYS = [
    *[(f"csd_{k}_{d}", ("csd", d, k)) for d in DISTS for k in ("abs", "rel", "un")],
    *[(f"csd_ratio_{k}", ("csd", "ratio", k)) for k in ("abs", "rel", "un")],
    *[(f"{m}_{d}", ("geometry", d, m)) for d in DISTS for m in ("procrustes", "procrustes_raw", "gram", "cka")],
    ("dw_frobenius", ("spectral", "frobenius_norm")),
    ("dw_effective_rank", ("spectral", "effective_rank")),
    ("dw_principal_fraction", ("spectral", "principal_fraction")),
    ("dw_principal_left_fraction", ("spectral", "principal_left_fraction")),
    ("dw_principal_right_fraction", ("spectral", "principal_right_fraction")),
    ("dw_top_sv_rel_change", ("spectral", "top_sv_rel_change")),
]


class _Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def _weight(model, name: str) -> torch.Tensor:
    try:
        mod = model.get_submodule(name)
    except AttributeError:
        raise ArenaError(f"tuned model has no module {name!r} (did the merge return a different architecture?)") from None
    return mod.weight.detach().float().cpu()


def module_metrics(name: str, w0: torch.Tensor, w1: torch.Tensor, base: dict[str, Capture],
                   tuned: dict[str, Capture], timer: _Timer | None = None) -> dict:
    """All diagnostics of one module from its weights and the captures of each distribution."""
    from arena.analysis.drift import csd, csd_ratio
    from arena.analysis.geometry import gram_distortion, linear_cka, procrustes
    from arena.analysis.spectra import spectral_profile

    timer = timer or _Timer()
    if w0.shape != w1.shape:
        raise ArenaError(f"{name}: base weight {tuple(w0.shape)} and tuned weight {tuple(w1.shape)} differ in shape")
    dw = w1 - w0  # fp32; the metric functions promote to float64
    out: dict = {"shape": list(w0.shape), "csd": {}, "geometry": {}}
    for d, cap0 in base.items():
        cap1 = tuned[d]
        h, x0, x1 = cap0.inputs[name], cap0.outputs[name], cap1.outputs[name]
        if x0.shape[0] != x1.shape[0] or h.shape[0] != x0.shape[0]:
            raise ArenaError(f"{name} on {d} prompts: token counts differ (base inputs {h.shape[0]}, base outputs "
                             f"{x0.shape[0]}, tuned outputs {x1.shape[0]}); base and tuned must see the same tokens")
        try:
            with timer("csd"):
                out["csd"][d] = csd(dw, h, w0)
            with timer("procrustes"):
                pr = procrustes(x0, x1)
            with timer("gram"):
                gram = gram_distortion(x0, x1)
            with timer("cka"):
                cka = linear_cka(x0, x1)
        except ArenaError as e:
            raise ArenaError(f"{name} on {d} prompts: {e}") from None
        out["geometry"][d] = {"procrustes": pr.aligned, "procrustes_raw": pr.raw, "gram": gram, "cka": cka}
    if all(d in out["csd"] for d in DISTS):
        out["csd"]["ratio"] = csd_ratio(out["csd"]["general"], out["csd"]["target"])
    with timer("spectral"):
        out["spectral"] = spectral_profile(dw, w0)
    return out


def summarize_modules(per_module: dict) -> dict:
    """Mean of each summary scalar over modules (NaN values skipped; None when no module has it)."""
    out = {}
    for flat, path in SUMMARY_KEYS:
        vals = []
        for m in per_module.values():
            v = m
            for p in path:
                v = v.get(p) if isinstance(v, dict) else None
            if isinstance(v, (int, float)) and not math.isnan(v):
                vals.append(float(v))
        out[flat] = sum(vals) / len(vals) if vals else None
    return out


def compute_diagnostics(base_model, tuned_model, tokenizer, prompt_sets: dict[str, Sequence[str]],
                        modules: Sequence[str], model_key: dict, *, caps: Caps | None = None,
                        precision: str = "bf16-autocast", device=None, use_cache: bool = True,
                        cache_dir: Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Diagnostics of `tuned_model` against `base_model` (both plain, merged models) on the prompt sets.

    Works for any two models of the same architecture; `model_key` identifies the base model for the
    activation cache.
    """
    timer = _Timer()
    caps = caps or Caps()
    base_caps, tuned_caps, info = {}, {}, {}
    for d, prompts in prompt_sets.items():
        with timer("capture_base"):
            base_caps[d] = cached_capture(base_model, tokenizer, prompts, modules, model_key, caps=caps,
                                          precision=precision, device=device, use_cache=use_cache, cache_dir=cache_dir)
        with timer("capture_tuned"):
            enc = encode_prompts(tokenizer, prompts, caps)
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
    timings["metrics_s"] = round(sum(timer.seconds.get(k, 0.0) for k in ("csd", "procrustes", "gram", "cka", "spectral")), 3)
    return {"modules": per_module, "summary": summarize_modules(per_module), "distributions": info,
            "settings": {"modules": list(modules), **caps.to_dict(), "precision": precision},
            "timings": timings}


def run_prompt_sets(cfg, caps: Caps, data_dir: str | None = None) -> dict[str, list[str]]:
    """The "general" and "target" prompt lists of a run (enough prompts to fill the caps)."""
    from arena.analysis.prompts import general_prompts, target_prompts
    from arena.config import resolve_data_dir
    from arena.components import build_components

    data_dir = data_dir or cfg.data_dir or resolve_data_dir(None)
    _, target, _ = build_components(cfg, check_data=False)
    n = caps.max_prompts
    return {"general": general_prompts(data_dir, (n + 1) // 2, cfg.probe.seed)[:n],
            "target": target_prompts(target, n, cfg.probe.seed)}


def analyze_run(run_dir, settings: DiagnosticsSettings, *, device: str = "cpu", cache_dir: Path | None = None,
                write: bool = True, log: Callable[[str], None] = print) -> dict:
    """Diagnose a finished run folder; stores the result under "diagnostics" in its record.json."""
    from arena.analysis.capture import resolve_modules
    from arena.evaluation.cache import model_fingerprint
    from arena.models.loader import load_model
    from arena.runs import load_run_model, read_run_config, set_record_key
    from arena.training.device import pick_device

    s = settings
    modules, max_prompts, max_tokens, max_length = s.modules, s.max_prompts, s.max_tokens, s.max_length
    shared_prefix, precision, data_dir, use_cache = s.shared_prefix, s.precision, s.data_dir, s.use_cache
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    caps = Caps(max_prompts, max_tokens, max_length, shared_prefix)
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
    if write:
        set_record_key(run_dir, "diagnostics", diag)
    return diag


# -- presentation -------------------------------------------------------------------------------------

def short_name(module: str) -> str:
    """'model.layers.10.self_attn.q_proj' -> 'L10.q_proj'."""
    import re

    m = re.match(r"^.*\.layers\.(\d+)\..*?([^.]+)$", module)
    return f"L{m.group(1)}.{m.group(2)}" if m else module


def _g(x, fmt="{:.4g}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return fmt.format(x)


def format_table(diag: dict) -> str:
    cols = [("module", 15), ("|dW|_F", 9), ("CSDrel G", 9), ("CSDrel T", 9), ("CSDun G", 9), ("G/T rel", 8),
            ("Proc G", 8), ("Proc T", 8), ("raw G", 8), ("Gram G", 8), ("CKA G", 8), ("CKA T", 8), ("princ", 7)]
    head = " ".join(f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, w) in enumerate(cols))
    lines = [head, "-" * len(head)]

    def row(label, vals):
        return " ".join([f"{label:<15}"] + [f"{_g(v):>{w}}" for v, (_, w) in zip(vals, cols[1:])])

    for name, m in diag["modules"].items():
        c, g, s = m["csd"], m["geometry"], m["spectral"]
        lines.append(row(short_name(name), [
            s["frobenius_norm"], c.get("general", {}).get("rel"), c.get("target", {}).get("rel"),
            c.get("general", {}).get("un"), c.get("ratio", {}).get("rel"),
            g.get("general", {}).get("procrustes"), g.get("target", {}).get("procrustes"),
            g.get("general", {}).get("procrustes_raw"), g.get("general", {}).get("gram"),
            g.get("general", {}).get("cka"), g.get("target", {}).get("cka"), s["principal_fraction"]]))
    sm = diag["summary"]
    lines.append("-" * len(head))
    lines.append(row("mean", [sm["dw_frobenius"], sm["csd_rel_general"], sm["csd_rel_target"], sm["csd_un_general"],
                              sm["csd_ratio_rel"], sm["procrustes_general"], sm["procrustes_target"],
                              sm["procrustes_raw_general"], sm["gram_general"], sm["cka_general"], sm["cka_target"],
                              sm["dw_principal_fraction"]]))
    return "\n".join(lines)


def format_summary(diag: dict) -> str:
    lines = ["summary (mean over modules):"]
    for k, v in diag["summary"].items():
        lines.append(f"  {k:24s} {_g(v, '{:.6g}')}")
    t = diag["timings"]
    lines.append("timings (s): " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in t.items()))
    for d, i in diag["distributions"].items():
        lines.append(f"{d}: {i['prompts']} prompts, {i['tokens']} tokens (base activations "
                     f"{'cached' if i['base_cached'] else 'captured now'}); common prompt prefix "
                     f"{i['common_prefix_tokens']} tokens, {i['repeated_prefix_share']:.0%} of the rows repeat it")
    return "\n".join(lines)
