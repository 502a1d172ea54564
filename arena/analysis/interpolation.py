"""The target-vs-general curve of θ(α) between the base and a tuned run (docs/design.md "Diagnostics").

`interpolate_run` walks θ(α) (interpolator.py: the "weights" path for every method, the method's
own "generator" path where it has one), scores each α on both axes (curve_scorer.py: the
continuous proxies, lower NLL is better, or lm-eval benchmark scores, higher is better) with deltas
paired against α = 0, and marks two trade-off points (tradeoff.py: (a) "constrained", (b) "knee").

Record layout: record["interpolation"][path] = {"points": [{"alpha", "path", "seconds", "general":
{value, se, n, delta, delta_se, ...}, "target": {...}}], "best": {"constrained": {"alpha", "delta",
"rule"}, "knee": {"alpha", "distance", "rule"}}, "scorer": {"name", "orientation", ...}, "alphas",
"suites", "limit", "method", "seconds"}.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from arena.analysis.curve_scorer import SCORERS, CurveScorer
from arena.analysis.interpolator import load_interpolator
from arena.analysis.settings import INTERP_SUITES, InterpolationSettings
from arena.analysis.tradeoff import tradeoff
from arena.components import build_components
from arena.config import resolve_data_dir
from arena.evaluation.cache import model_fingerprint
from arena.runs import read_run_config, set_record_key
from arena.training.device import pick_device, resolve_precision


def base_fingerprint(cfg) -> dict:
    """The fingerprint of θ(0): the catalog model's, and the run it starts from when
    model.init_from is set (a CPT-then-SFT run's base is that run's weights, not the plain model)."""
    fp = model_fingerprint(cfg.model.name, cfg.model.revision)
    return {**fp, "init_from": cfg.model.init_from} if cfg.model.init_from else fp


def interpolate_run(run_dir, settings: InterpolationSettings, *, device: str = "cpu", write: bool = True,
                    log: Callable[[str], None] = print) -> dict:
    """Score θ(α) for each α on the chosen axes; stored under record["interpolation"][settings.path].

    limit: examples per benchmark (proxy: `limit` IFEval + `limit` NQ-open prompts and `limit`
    held-out target examples; lm-eval: its per-benchmark limit).
    """
    t0 = time.perf_counter()
    s = settings
    alpha_list, suite_list, limit, path, scorer = s.alphas, [x for x in INTERP_SUITES if x in s.suites], s.limit, \
        s.path, s.scorer
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    dev = pick_device(device)
    prec = resolve_precision(s.precision or cfg.train.precision, dev)
    prec = "bf16-autocast" if prec in ("bf16", "bf16-autocast") else "fp32"
    data_dir = s.data_dir or cfg.data_dir or resolve_data_dir(None)
    _, target, _ = build_components(cfg, check_data=False)
    sc = CurveScorer(scorer, None, target, suite_list, limit, data_dir, cfg.probe.seed, dev, prec,
                     base_fingerprint(cfg), engine=s.engine)
    sc.check_data()
    interp, tok, cfg, _ = load_interpolator(run_dir, path, dev)
    sc.tok = tok
    log(f"{cfg.method.name}: {path} path, {interp.changed_parameters():,} parameters move with alpha; "
        f"load {time.perf_counter() - t0:.1f}s")
    with interp.at(0.0) as base_model:
        sc.prepare(base_model, log)
    points = []
    for a in [0.0] + [a for a in alpha_list if a != 0.0]:  # α = 0 first: the reference of the deltas
        t1 = time.perf_counter()
        with interp.at(a) as model:
            # θ(0) is the base model: its scores are shared by every run of the base (CurveScorer.score_base)
            res = sc.score_base(model, path, cfg.method.to_dict()) if a == 0.0 else sc.score(model)
            point = {"alpha": a, "path": path, **sc.point(res)}
        point["seconds"] = round(time.perf_counter() - t1, 2)
        if res.get("cached"):
            point["cached"] = True
        points.append(point)
        log(f"alpha {a:g}: " + ", ".join(f"{ax} {point[ax]['value']:.4f}" for ax in suite_list)
            + f" ({point['seconds']:.1f}s{', base cache' if res.get('cached') else ''})")
    points.sort(key=lambda p: p["alpha"])
    result = {"path": path, "method": cfg.method.name, "alphas": alpha_list, "suites": suite_list, "limit": limit,
              "scorer": {"name": scorer, "orientation": sc.orientation, "description": SCORERS[scorer],
                         "precision": prec, "seed": cfg.probe.seed, "engine": s.engine},
              "points": points, "best": tradeoff(points, sc.orientation, s.delta),
              "seconds": round(time.perf_counter() - t0, 2)}
    if write:
        set_record_key(run_dir, "interpolation", result, subkey=path)
    return result
