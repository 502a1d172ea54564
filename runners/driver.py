"""The sweep driver: expand, look at what is on disk, run what is left, report.

    run_sweep(cfg)                      # local executor, cfg.runner.jobs at a time
    run_sweep(cfg, executor="ray", ray_address="auto")

Idempotent: a second invocation of a finished sweep starts nothing and says so. A killed driver or
worker leaves folders that the next invocation resumes (the record of a run is written atomically
and only a complete one counts). One driver per sweep folder at a time (flock on .sweep/driver.lock).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import yaml

from arena.components import build_components
from arena.config import run_config_from_dict
from arena.errors import ArenaError, ConfigError
from arena.records import atomic_write_text
from arena.sweeps.expand import RunSpec, expand
from arena.sweeps.spec import SweepConfig, component_name
from runners import state as S
from runners.local import LocalExecutor, Outcome, Task
from runners.ray_executor import RayExecutor
from runners.stages import update_sweep

REPO_ROOT = Path(__file__).resolve().parents[1]
# Environment passed on to workers (also on Ray nodes, where the rest of the driver's env is absent).
PASS_ENV_PREFIXES = ("ARENA_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "NLTK_DATA", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                     "PYTHONPATH")


@dataclass
class SweepSummary:
    name: str
    out: Path
    total: int
    complete_before: int = 0
    completed: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)  # run_id -> error (this invocation)
    failed_before: dict = field(default_factory=dict)  # failed earlier, not retried
    interrupted: list = field(default_factory=list)
    busy: list = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False
    todo: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted and not self.busy

    def format(self) -> str:
        if self.dry_run:
            return f"sweep {self.name}: {self.total} runs, {self.complete_before} complete, {len(self.todo)} to run " \
                   f"({self.out})"
        if not self.todo and not self.busy:
            msg = f"sweep {self.name}: all {self.total} runs finished; nothing to do ({self.out})"
            if self.failed_before:
                msg += f"\n  {len(self.failed_before)} of them failed: {', '.join(self.failed_before)} " \
                       "(--retry-failed runs them again)"
            return msg
        lines = [f"sweep {self.name}: {len(self.completed)} run(s) completed now, {self.complete_before} before, "
                 f"{len(self.failed)} failed, {len(self.interrupted)} interrupted, of {self.total}; "
                 f"{self.seconds:.0f}s ({self.out})"]
        for rid, err in self.failed.items():
            lines.append(f"  failed: {rid}: {err}")
        if self.failed_before:
            lines.append(f"  failed earlier, not retried: {', '.join(self.failed_before)} (--retry-failed)")
        if self.interrupted:
            lines.append(f"  interrupted: {', '.join(self.interrupted)} (re-run the same command to resume)")
        if self.busy:
            lines.append(f"  busy (another worker holds them): {', '.join(self.busy)}")
        return "\n".join(lines)


def worker_env(cfg: SweepConfig, spec: RunSpec) -> dict:
    env = {k: v for k, v in os.environ.items() if k.startswith(PASS_ENV_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    threads = spec.config["train"].get("threads") or 0
    if cfg.runner.threads:
        env["ARENA_SWEEP_THREADS"] = str(cfg.runner.threads)
        if cfg.runner.threads != "auto":
            env["OMP_NUM_THREADS"] = str(cfg.runner.threads)
    elif threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _task(cfg: SweepConfig, out: Path, spec: RunSpec, timeout_s: Optional[float]) -> Task:
    device = str(spec.config["train"].get("device", "auto"))
    threads = spec.config["train"].get("threads") or 1
    ranks = cfg.runner.gpus_for(spec.model)
    env = worker_env(cfg, spec)
    if ranks > 1:  # the worker trains through torchrun (runners/stages.py)
        env["ARENA_SWEEP_RANKS"] = str(ranks)
    return Task(run_id=spec.run_id, cmd=[sys.executable, "-m", "runners.worker", str(out), spec.run_id],
                env=env, log=S.log_path(out, spec.run_id), cpus=float(threads) * ranks,
                gpus=float(ranks) if device == "auto" or device.startswith("cuda") else 0.0, timeout_s=timeout_s)


def _lock_driver(out: Path):
    p = S.meta_dir(out) / "driver.lock"
    p.parent.mkdir(parents=True, exist_ok=True)
    f = open(p, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        other = f.read().strip()
        f.close()
        raise ArenaError(f"another `arena sweep` is running on {out} ({other or 'pid unknown'}); "
                         "wait for it or stop it first") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    return f


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def record_outcome(out: Path, spec: RunSpec, o: Outcome) -> tuple[str, str]:
    """After a worker exits: (status, error) from disk, writing a failure record where the worker
    could not (killed, timed out, crashed). A complete record is never touched."""
    # not at module level: the package imports this module, and the worker runs as
    # `python -m runners.worker`, which must not find itself imported already
    from runners.worker import write_failure

    st = S.run_state(out, spec)
    if st.status == S.COMPLETE:
        return S.COMPLETE, ""
    log = S.log_path(out, spec.run_id)
    if o.returncode == 75:
        return "busy", "another worker holds the run's lock"
    if o.timed_out:
        err, retryable = f"timed out after {o.seconds:.0f}s (runner.timeout_s); log: {log}", False
    elif o.returncode < 0:
        sig = _signal_name(o.returncode)
        hint = " (out of memory, or killed by hand)" if sig == "SIGKILL" else ""
        err, retryable = f"worker killed by {sig}{hint}{'; ' + o.note if o.note else ''}; log: {log}", True
    elif o.returncode == 1 and st.status == S.FAILED:
        return S.FAILED, st.detail
    else:
        err, retryable = f"worker exited with code {o.returncode}{'; ' + o.note if o.note else ''}; log: {log}", False
    rec, _ = S.read_record_safe(out / spec.run_id)
    if rec and rec.get("status") == "done":
        # trained, killed during a stage: the stages left are retried by the next invocation
        def change(sw):
            sw["status"] = "interrupted" if retryable else "failed"
            sw["error"] = err

        update_sweep(out / spec.run_id, spec, change)
    else:
        write_failure(out / spec.run_id, spec, err, retryable=retryable)
    return (S.INTERRUPTED if retryable else S.FAILED), err


def plan_sweep(cfg: SweepConfig, out: Optional[Path] = None) -> tuple[Path, list[RunSpec]]:
    out = Path(out or cfg.out_dir()).resolve()
    return out, expand(cfg)


def run_sweep(cfg: SweepConfig, *, executor: str = "local", jobs: Optional[int] = None, ray_address: str = "auto",
              retry_failed: bool = False, dry_run: bool = False, progress: bool = True,
              out: Optional[Path] = None, log: Callable[[str], None] = print, plan_check: bool = True) -> SweepSummary:
    t_start = time.monotonic()
    out, runs = plan_sweep(cfg, out)
    summary = SweepSummary(cfg.name, out, len(runs), dry_run=dry_run)
    states = {r.run_id: S.run_state(out, r) for r in runs}
    todo = []
    for r in runs:
        st = states[r.run_id]
        if st.status == S.COMPLETE:
            summary.complete_before += 1
        elif st.status == S.FAILED and not retry_failed:
            summary.failed_before[r.run_id] = st.detail
        else:
            todo.append(r)
    summary.todo = [r.run_id for r in todo]
    if dry_run:
        for r in runs:
            st = states[r.run_id]
            skipped = "".join(f"; {k} skipped: {v}" for k, v in r.skipped.items())
            log(f"  {st.status:11s} {r.run_id}  stages: {', '.join(['train', *r.stages])}{skipped}")
        return summary
    if not todo:
        return summary
    _preflight(todo)
    _check_ranks(cfg, todo, executor, jobs or cfg.runner.jobs)
    if plan_check and executor == "local":
        _check_fits(cfg, todo)
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock_driver(out)
    try:
        S.write_plan(out, cfg.to_dict(), runs)
        atomic_write_text(out / "sweep.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        known = {r.run_id for r in runs}
        stray = [p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in known
                 and (p / "record.json").is_file()]
        if stray:
            log(f"note: {len(stray)} run folder(s) in {out} are not in this sweep's plan (an earlier config); "
                "they are kept and the dashboard shows them")
        ex = _executor(executor, jobs or cfg.runner.jobs, ray_address)
        by_id = {r.run_id: r for r in runs}
        tasks = [_task(cfg, out, r, cfg.runner.timeout_s) for r in todo]
        if executor == "ray" or (jobs or cfg.runner.jobs) > 1:
            _gate_on_cache_leaders(tasks, todo, runs, states)
        log(f"sweep {cfg.name}: {len(runs)} runs, {summary.complete_before} complete, {len(todo)} to run "
            f"({', '.join(sorted({states[r.run_id].status for r in todo}))}); {ex.describe()}; results in {out}")
        bar = _progress(len(runs), summary.complete_before + len(summary.failed_before), progress)

        def on_start(rid: str) -> None:
            S.append_event(out, rid, "start", executor=ex.name)
            bar.set_postfix_str(rid[:40])

        def on_done(o: Outcome) -> None:
            status, err = record_outcome(out, by_id[o.run_id], o)
            S.append_event(out, o.run_id, status, seconds=round(o.seconds, 2), returncode=o.returncode)
            if status == S.COMPLETE:
                summary.completed.append(o.run_id)
                bar.write(f"done    {o.run_id} ({o.seconds:.0f}s)")
            elif status == "busy":
                summary.busy.append(o.run_id)
                bar.write(f"busy    {o.run_id}: {err}")
            elif status == S.INTERRUPTED:
                summary.interrupted.append(o.run_id)
                bar.write(f"killed  {o.run_id}: {err}")
            else:
                summary.failed[o.run_id] = err
                bar.write(f"FAILED  {o.run_id}: {err}")
            bar.update(1)

        try:
            ex.run(tasks, on_start, on_done)
        except KeyboardInterrupt:
            if hasattr(ex, "stop"):
                ex.stop()
            for rid in getattr(ex, "stopped", []):
                record_outcome(out, by_id[rid], Outcome(rid, -signal.SIGTERM, 0.0))
                S.append_event(out, rid, S.INTERRUPTED)
                summary.interrupted.append(rid)
            bar.close()
            raise
        bar.close()
    finally:
        lock.close()
    summary.seconds = time.monotonic() - t_start
    return summary


def _preflight(todo: list[RunSpec]) -> None:
    """Missing data files fail the sweep before any run starts (not every run, one by one)."""
    seen = set()
    for r in todo:
        key = (json.dumps(r.config["target"], sort_keys=True), r.config.get("data_dir"))
        if key in seen:
            continue
        seen.add(key)
        try:
            build_components(run_config_from_dict(r.config), check_data=True)
        except ArenaError as e:
            raise ArenaError(f"{r.run_id}: {e}") from None


def _check_ranks(cfg: SweepConfig, todo: list[RunSpec], executor: str, jobs: int) -> None:
    """Sharded runs (runner.gpus_per_run > 1) are checked as `arena train --nproc` checks them, before
    any run starts: the batch split and the method everywhere; the device count here only on the
    local executor (Ray places runs on the cluster's GPUs, not this machine's)."""
    from arena.training.launch import check_launch

    models = sorted({component_name(m, "models") for m in cfg.models})
    for name in (cfg.runner.gpus_per_run if isinstance(cfg.runner.gpus_per_run, dict) else {}):
        if name != "default" and name not in models:
            raise ConfigError(f"runner.gpus_per_run.{name}", cfg.runner.gpus_per_run[name],
                              f"not a model of this sweep (models: {', '.join(models)}; or 'default')")
    sharded = [r for r in todo if cfg.runner.gpus_for(r.model) > 1]
    if sharded and executor == "local" and jobs > 1:
        raise ConfigError("runner.jobs", jobs, "with runner.gpus_per_run > 1 the local executor runs one sharded "
                          "run at a time (it does not split the devices between runs); use 1, or --executor ray")
    for r in sharded:
        ranks = cfg.runner.gpus_for(r.model)
        try:
            check_launch(run_config_from_dict(r.config), ranks, devices_here=executor == "local")
        except ConfigError as e:
            raise ArenaError(f"{r.run_id}: runner.gpus_per_run {ranks}: {e}") from None


def _check_fits(cfg: SweepConfig, todo: list[RunSpec]) -> None:
    """On a CUDA machine, the runs `arena plan` says will not fit this machine's GPUs are refused
    before any run starts, with the plan's numbers (CPU runs are not checked: host RAM is shared
    with everything else on the machine, and no GPU memory is at stake)."""
    if not any(str(r.config["train"].get("device", "auto")) in ("auto", "cuda") or
               str(r.config["train"].get("device", "")).startswith("cuda") for r in todo):
        return
    import torch

    if not torch.cuda.is_available():
        return
    from arena.planning.plan import Devices, plan_run

    props = torch.cuda.get_device_properties(0)
    dev = Devices(count=torch.cuda.device_count(), mem_gib=props.total_memory / 2**30, kind="GPU")
    bad = []
    for r in todo:
        p = plan_run(run_config_from_dict(r.config), dev, cfg.runner.gpus_for(r.model), name=r.run_id)
        if not p.fits(dev):
            bad.append(f"{r.run_id}: {p.why_not(dev)}")
    if bad:
        raise ArenaError(f"{len(bad)} of {len(todo)} runs will not fit this machine's GPUs ({dev.count} x "
                         f"{dev.mem_gib:.0f} GiB): " + "; ".join(bad[:3]) + (" ..." if len(bad) > 3 else "")
                         + " (arena plan shows every run; --no-plan-check starts them anyway)")


def _gate_on_cache_leaders(tasks: list[Task], todo: list[RunSpec], runs: list[RunSpec], states: dict) -> None:
    """Parallel runs would all score the same base model (and capture the same base activations) at
    once: the first run of each (model, target) runs alone and fills the shared caches, the others
    start after it. Groups with a complete run already have warm caches and are not gated."""
    if not any(r.stages for r in todo):
        return
    warm = {(r.model, json.dumps(r.config["target"], sort_keys=True)) for r in runs
            if states[r.run_id].status == S.COMPLETE}
    leaders: dict = {}
    for t, r in zip(tasks, todo):
        key = (r.model, json.dumps(r.config["target"], sort_keys=True))
        if key in warm or not r.stages:
            continue
        if key in leaders:
            t.after = leaders[key]
        else:
            leaders[key] = r.run_id


def _executor(name: str, jobs: int, ray_address: str):
    if name == "local":
        return LocalExecutor(jobs)
    if name == "ray":
        return RayExecutor(ray_address)
    raise ArenaError(f"executor {name!r}: allowed: local, ray")


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="runs", unit="run", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True)
