"""The steps of one run, in the worker process: train, then eval / diagnostics / interpolation / ilp.

Each step is one call into a library seam (`run_training`, `evaluate_run`, `analyze_run`,
`interpolate_run`, `ilp_run`) with the settings object its stage dict rebuilds (the same object the CLI
flags build), and every record change goes through `arena.runs.update_record`; runners never
reach into the core. Each stage's outcome is stored under record["sweep"]["stages"][name] with the
fingerprint of its settings, so a resumed sweep knows exactly which stages are still to do; a
stage the sweep enables but leaves out for this run (ilp on a non-SFT run) is recorded there as
{"status": "skipped", "reason": ...}, so its absence is explained rather than silent.

The driver imports this module for the record updates, so what imports torch (training, the
analysis stages, the device choice) is imported inside the functions that run in the worker.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Optional

from arena.analysis.settings import DiagnosticsSettings, InterpolationSettings
from arena.config import run_config_from_dict
from arena.evaluation.run import evaluate_run
from arena.evaluation.settings import EvalSettings
from arena.records import utc_now
from arena.runs import update_record
from arena.schema import build
from arena.sweeps.expand import RunSpec, stage_fingerprint
from runners.state import read_plan

Log = Callable[[str], None]


def run_config(spec: RunSpec, run_dir: Path, threads: int = 0):
    """The run's RunConfig for this folder; `threads` (the worker's choice) never changes its identity."""
    d = dict(spec.config)
    d["out"] = str(run_dir)
    d["train"] = {**d["train"], "progress": False, **({"threads": threads} if threads else {})}
    return run_config_from_dict(d)


def pick_threads(setting: str, log: Log) -> int:
    """runner.threads -> a thread count. "auto": time the same matmul with 1 thread and with every
    core, alternating, and keep more threads only when they are clearly (>= 15%) faster."""
    import torch

    cores = os.cpu_count() or 1
    if setting != "auto":
        return int(setting)
    if cores == 1:
        return 1
    x, w = torch.randn(256, 576), torch.randn(576, 1536)
    best = {1: float("inf"), cores: float("inf")}
    for _ in range(3):
        for th in best:
            torch.set_num_threads(th)
            x @ w
            t0 = time.perf_counter()
            for _ in range(10):
                x @ w
            best[th] = min(best[th], time.perf_counter() - t0)
    chosen = cores if best[cores] < 0.85 * best[1] else 1
    log(f"threads: auto -> {chosen} (matmul 1 thread {1e3 * best[1]:.1f} ms, {cores} threads {1e3 * best[cores]:.1f} ms)")
    return chosen


def worker_threads(setting: Optional[str], spec: RunSpec, log: Log) -> int:
    """The torch thread count of this worker, for training and every stage, set once: the sweep's
    runner.threads when it gives one, else the run's train.threads (0: torch's default)."""
    import torch

    threads = pick_threads(setting, log) if setting else int(spec.config["train"].get("threads") or 0)
    if threads:
        torch.set_num_threads(threads)
    return threads


def train(spec: RunSpec, run_dir: Path, log: Log, threads: int = 0) -> dict:
    """Train in this process, or over runner.gpus_per_run ranks under torchrun (the driver sets
    ARENA_SWEEP_RANKS); either way the run folder ends with the same record and weights layout."""
    from arena.experiment import run_training

    ranks = int(os.environ.get("ARENA_SWEEP_RANKS", "1"))
    if ranks > 1:
        from arena.errors import ArenaError
        from arena.records import read_run_record
        from arena.training.launch import launch

        rc = launch(run_config(spec, run_dir, threads), ranks, log=log)
        rec = read_run_record(run_dir)
        if rc != 0 or rec is None or rec.status != "done":
            raise ArenaError(f"sharded training on {ranks} ranks failed: "
                             f"{rec.error if rec and rec.error else f'torchrun exit {rc}'}")
        return rec.to_dict()
    record = run_training(run_config(spec, run_dir, threads), log=log)
    record.pop("_model", None)
    return record


def _device(spec: RunSpec):
    from arena.training.device import pick_device

    return pick_device(spec.config["train"].get("device", "auto"))


def eval_stage(spec: RunSpec, run_dir: Path, settings: dict, log: Log) -> dict:
    """`arena eval --run` with the sweep's settings; the base side comes from the shared base cache."""
    out = evaluate_run(run_dir, build(EvalSettings, settings, "eval"), device=_device(spec), log=log,
                       argv=["sweep", spec.run_id])
    c = out["base"].get("cache") or {}
    return {"base_cache_hits": len(c.get("hits", [])), "base_cache_misses": len(c.get("misses", []))}


def diagnostics_stage(spec: RunSpec, run_dir: Path, settings: dict, log: Log) -> dict:
    from arena.analysis.diagnostics import analyze_run

    analyze_run(run_dir, build(DiagnosticsSettings, settings, "diagnostics"), device=str(_device(spec)), write=True,
                log=log)
    return {}


def interpolation_stage(spec: RunSpec, run_dir: Path, settings: dict, log: Log) -> dict:
    from arena.analysis.interpolation import interpolate_run

    interpolate_run(run_dir, build(InterpolationSettings, settings, "interpolation"), device=str(_device(spec)),
                    write=True, log=log)
    return {}


def ilp_stage(spec: RunSpec, run_dir: Path, settings: dict, log: Log) -> dict:
    """`arena ilp --run` with the sweep's settings: detect + attribute incomplete learning (SFT runs)."""
    from arena.ilp.run import ilp_run
    from arena.ilp.settings import IlpSettings

    out = ilp_run(run_dir, build(IlpSettings, settings, "ilp"), device=str(_device(spec)), log=log, write=True)
    u = (out or {}).get("unlearned") or {}
    return {"unlearned": u.get("k"), "tested": u.get("n")}


STAGE_FUNCS = {"eval": eval_stage, "diagnostics": diagnostics_stage, "interpolation": interpolation_stage,
               "ilp": ilp_stage}


def mark(run_dir: Path, spec: RunSpec, stage: str, status: str, seconds: float, error: str | None = None,
         retryable: bool = False, info: dict | None = None) -> None:
    """Record one stage's outcome under record["sweep"] (atomic, under the record lock)."""
    entry = {"status": status, "fingerprint": stage_fingerprint(spec.stages[stage]), "seconds": round(seconds, 2),
             "finished": utc_now(), **(info or {})}
    if error:
        entry["error"] = error
        entry["retryable"] = retryable
    update_sweep(run_dir, spec, lambda sw: sw["stages"].__setitem__(stage, entry))


def mark_skipped(run_dir: Path, spec: RunSpec) -> None:
    """Record each stage the plan leaves out of this run (spec.skipped) with its reason."""
    if not spec.skipped:
        return

    def change(sw):
        for stage, reason in spec.skipped.items():
            sw["stages"][stage] = {"status": "skipped", "reason": reason, "finished": utc_now()}

    update_sweep(run_dir, spec, change)


def sweep_section(spec: RunSpec, sweep_name: str) -> dict:
    return {"name": sweep_name, **spec.sweep_section(), "stages": {}, "status": "partial"}


def update_sweep(run_dir: Path, spec: RunSpec, change: Callable[[dict], None]) -> None:
    """Apply `change` to record["sweep"] (created when absent) through the locked record update."""

    def apply(rec: dict) -> None:
        sw = rec.get("sweep") if isinstance(rec.get("sweep"), dict) else None
        if sw is None:
            sw = sweep_section(spec, _sweep_name(run_dir))
        sw.setdefault("stages", {})
        change(sw)
        rec["sweep"] = sw

    update_record(run_dir, apply)


def _sweep_name(run_dir: Path) -> str:
    try:
        return read_plan(run_dir.parent)["sweep"]["name"]
    except Exception:  # informational only
        return run_dir.parent.name


def finish(run_dir: Path, spec: RunSpec, status: str) -> None:
    def change(sw):
        sw["status"] = status
        sw.update(spec.sweep_section())
        sw["completed" if status == "complete" else "updated"] = utc_now()

    update_sweep(run_dir, spec, change)
