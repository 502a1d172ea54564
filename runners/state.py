"""What a sweep folder holds, and what is left to do — read only from disk.

Layout of a sweep folder (`results/<sweep>/` by default):

    plan.json                 the expanded runs (ids, resolved configs, stages); rewritten per invocation
    sweep.yaml                the sweep config as resolved
    <run_id>/                 one run folder each (config.yaml, train_log.jsonl, final/, record.json)
    .sweep/events.jsonl       start/end of every attempt (append-only; what a resume test counts)
    .sweep/logs/<run_id>.log  the worker's output, every attempt appended
    .sweep/locks/<run_id>.lock held by the worker running that run (flock; released when it dies)
    .sweep/driver.lock        held by the driver (one driver per sweep folder)

A run is *complete* only when its record.json says status "done", every stage the sweep asks for
(eval / diagnostics / interpolation / ilp) is recorded done with the same settings fingerprint, and the
worker has marked record["sweep"]["status"] complete (its last, atomic write). Anything
else is pending, partial (trained, stages left), interrupted (killed: retried automatically) or
failed (an error: retried only with --retry-failed).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from arena.records import RECORD, atomic_write_text
from arena.runs import has_config
from arena.sweeps.expand import RunSpec, stage_fingerprint

PLAN = "plan.json"
META = ".sweep"
STAGES = ("eval", "diagnostics", "interpolation", "ilp")

COMPLETE, PENDING, PARTIAL, INTERRUPTED, FAILED, CORRUPT = \
    "complete", "pending", "partial", "interrupted", "failed", "corrupt"


def meta_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / META


def log_path(sweep_dir: Path, run_id: str) -> Path:
    return meta_dir(sweep_dir) / "logs" / f"{run_id}.log"


def lock_path(sweep_dir: Path, run_id: str) -> Path:
    return meta_dir(sweep_dir) / "locks" / f"{run_id}.lock"


def events_path(sweep_dir: Path) -> Path:
    return meta_dir(sweep_dir) / "events.jsonl"


def append_event(sweep_dir: Path, run_id: str, event: str, **extra) -> None:
    """One JSON line per event; O_APPEND writes of one short line do not interleave."""
    p = events_path(sweep_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"t": round(time.time(), 3), "run_id": run_id, "event": event, "pid": os.getpid(), **extra}) + "\n"
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_events(sweep_dir: Path) -> list[dict]:
    p = events_path(sweep_dir)
    if not p.is_file():
        return []
    out = []
    for ln in p.read_text().splitlines():
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError:  # a line cut by a crash mid-write
            continue
    return out


def write_plan(sweep_dir: Path, sweep: dict, runs: list[RunSpec]) -> Path:
    p = Path(sweep_dir) / PLAN
    atomic_write_text(p, json.dumps({"sweep": sweep, "runs": [r.to_dict() for r in runs]}, indent=1, default=str))
    return p


def read_plan(sweep_dir: Path) -> dict:
    return json.loads((Path(sweep_dir) / PLAN).read_text())


def find_spec(sweep_dir: Path, run_id: str) -> RunSpec:
    for r in read_plan(sweep_dir)["runs"]:
        if r["run_id"] == run_id:
            return RunSpec.from_dict(r)
    raise KeyError(f"run {run_id!r} is not in {Path(sweep_dir) / PLAN}")


def read_record_safe(run_dir: Path) -> tuple[Optional[dict], Optional[str]]:
    """(record, None), (None, None) when absent, or (None, error) when unreadable."""
    p = Path(run_dir) / RECORD
    if not p.is_file():
        return None, None
    try:
        rec = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, f"{p}: unreadable record ({type(e).__name__}: {e})"
    if not isinstance(rec, dict):
        return None, f"{p}: record is not a JSON object"
    return rec, None


def stage_done(record: dict, stage: str, settings: dict) -> bool:
    st = ((record.get("sweep") or {}).get("stages") or {}).get(stage) or {}
    return st.get("status") == "done" and st.get("fingerprint") == stage_fingerprint(settings)


def stage_failed(record: dict, stage: str, settings: dict) -> bool:
    st = ((record.get("sweep") or {}).get("stages") or {}).get(stage) or {}
    return st.get("status") == "failed" and st.get("fingerprint") == stage_fingerprint(settings) \
        and not st.get("retryable")


@dataclass
class RunState:
    run_id: str
    status: str
    detail: str = ""
    todo: tuple = ()  # stages left (train first when the run is not trained)


def run_state(sweep_dir: Path, spec: RunSpec) -> RunState:
    run_dir = Path(sweep_dir) / spec.run_id
    rec, err = read_record_safe(run_dir)
    if err:
        return RunState(spec.run_id, CORRUPT, err, ("train", *spec.stages))
    if rec is None:
        status = PARTIAL if has_config(run_dir) else PENDING
        return RunState(spec.run_id, status, "", ("train", *spec.stages))
    if rec.get("status") != "done":
        if rec.get("status") == "failed" and not rec.get("retryable"):
            return RunState(spec.run_id, FAILED, str(rec.get("error") or "failed"), ("train", *spec.stages))
        return RunState(spec.run_id, INTERRUPTED, str(rec.get("error") or rec.get("status")), ("train", *spec.stages))
    todo = tuple(s for s in STAGES if s in spec.stages and not stage_done(rec, s, spec.stages[s]))
    if not todo:
        if (rec.get("sweep") or {}).get("status") == COMPLETE:
            return RunState(spec.run_id, COMPLETE)
        # every stage is recorded but the worker died before marking the run complete
        return RunState(spec.run_id, PARTIAL, "to be marked complete", ())
    failed = [s for s in todo if stage_failed(rec, s, spec.stages[s])]
    if failed:
        errs = "; ".join(f"{s}: {rec['sweep']['stages'][s].get('error')}" for s in failed)
        return RunState(spec.run_id, FAILED, errs, todo)
    return RunState(spec.run_id, PARTIAL, "stages left: " + ", ".join(todo), todo)
