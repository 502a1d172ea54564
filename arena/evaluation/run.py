"""`evaluate_run`: score a finished run folder against its base model and store the result.

The one implementation behind `arena eval --run` and a sweep's eval stage: rebuild the run's
merged model, score the base (through the base cache) and the tuned model on the same documents,
compare them paired, and store {"base", "tuned", "compare"} under "eval" in the run's record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from arena.components import build_components
from arena.config import resolve_data_dir
from arena.evaluation.api import base_scores, compare, evaluate_model
from arena.evaluation.settings import EvalSettings
from arena.evaluation.store import store_eval
from arena.runs import load_run_model


def run_data_dir(cfg, data_dir: str | None) -> str | None:
    """The data folder to score with: the one given, else the run's when it still exists, else the default."""
    if data_dir:
        return resolve_data_dir(data_dir)
    if cfg.data_dir and Path(cfg.data_dir).is_dir():
        return cfg.data_dir
    return resolve_data_dir(None)


def evaluate_run(run_dir: str | Path, settings: EvalSettings, *, device="auto", log: Callable[[str], None] = print,
                 verbose: bool = False, progress: bool = False, argv: Sequence[str] | None = None,
                 write: bool = True) -> dict:
    """Evaluate the run in `run_dir`; returns {"base", "tuned", "compare", "path", "merged"}.

    "path" is the record written (None with write=False); "merged" is true when the result was
    merged with an earlier evaluation on the same documents and settings.
    """
    from arena.training.device import pick_device  # imports torch

    run_dir = Path(run_dir)
    dev = pick_device(device) if isinstance(device, str) else device
    model, tok, cfg = load_run_model(run_dir, merged=True, device=dev)
    data_dir = run_data_dir(cfg, settings.data_dir)
    _, target, _ = build_components(cfg, check_data=False)
    target.data_dir = data_dir
    common = dict(suites=list(settings.suites), limit=settings.limit, seed=settings.seed, device=dev,
                  tasks=settings.tasks, settings=settings.run_settings(), proxies=settings.proxy_settings(),
                  log=log, verbose=verbose, progress=progress)
    base = base_scores(cfg.model.name, target=target, data_dir=data_dir, revision=cfg.model.revision,
                       cache=settings.use_cache, **common)
    tuned = evaluate_model(model, tok, target=target, data_dir=data_dir, reference=base.get("reference"),
                           model_id={"run": str(run_dir.resolve()), "base": base["model"], "method": cfg.method.name},
                           **common)
    cmp = compare(base, tuned)
    path, merged = store_eval(run_dir, base, tuned, cmp, argv=argv) if write else (None, False)
    return {"base": base, "tuned": tuned, "compare": cmp, "path": path, "merged": merged, "config": cfg}
