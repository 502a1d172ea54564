"""Run record files: `record.json` read and written atomically, and the environment a run records.

The record's schema is `arena.results.run_record.RunRecord`. A run folder without a finished
`record.json` is not a result. Writes go to a temporary file in the same folder, are fsynced, then
renamed over the target, so a crash never leaves a truncated record behind.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from arena.results.run_record import SCHEMA_VERSION, RunRecord

RECORD = "record.json"


def utc_now() -> str:
    """The timestamp every record field uses (created, finished, stage marks): UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_record(run_dir: Path, record: dict) -> Path:
    record = {"schema_version": SCHEMA_VERSION, **record}
    path = Path(run_dir) / RECORD
    atomic_write_text(path, json.dumps(record, indent=2, default=str))
    return path


def read_record(run_dir: Path) -> dict | None:
    path = Path(run_dir) / RECORD
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def read_run_record(run_dir: Path) -> RunRecord | None:
    """The run's record as a RunRecord (None when the folder has no record.json)."""
    rec = read_record(run_dir)
    return None if rec is None else RunRecord.from_dict(rec)


def amend_failure(run_dir: Path, amend) -> bool:
    """The shared preamble of recording a failure from outside the run (launcher, sweep runner):
    True when `run_dir` holds no usable record yet and the caller should write a new one. A record
    that says done is kept as it is; a failed one is passed to `amend(record)` (which returns
    whether it changed anything) and rewritten if so; an unreadable one counts as absent."""
    try:
        rec = read_run_record(run_dir)
    except ValueError:
        rec = None
    if rec and rec.status == "done":
        return False
    if rec and rec.status == "failed":
        if amend(rec):
            write_run_record(run_dir, rec)
        return False
    return True


def write_run_record(run_dir: Path, record: RunRecord) -> Path:
    return write_record(run_dir, record.to_dict())


def environment() -> dict:
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "transformers", "peft", "lm-eval", "trl", "arena"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": versions, "git": git_state()}


def git_state() -> dict:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return {}
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {}
