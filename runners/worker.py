"""One run of a sweep, in its own process: `python -m runners.worker SWEEP_DIR RUN_ID`.

The process isolation is the point: a crash, an out-of-memory kill or a hung library call fails
this run only, and the driver records it and goes on. The worker

1. takes the run's lock (another worker on the same run -> exit 75, nothing touched);
2. trains unless record.json already says done (run_training resumes a half-trained folder);
3. runs each stage the sweep asks for that is not recorded done with the same settings (and
   records the stages it leaves out of this run, with the reason);
4. marks the run complete in record["sweep"] — the only thing that makes it a finished result.

Exit codes: 0 complete, 1 failed (recorded), 75 run busy (locked by another worker).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import time
import traceback
from pathlib import Path

from arena.cli import runtime_defaults
from arena.records import RECORD
from arena.runs import LOCK, has_config
from runners import stages as st
from runners.state import COMPLETE, find_spec, lock_path, run_state

EXIT_OK, EXIT_FAILED, EXIT_BUSY = 0, 1, 75


def _set_parent_death_signal() -> None:
    """Linux: die with the driver (a kill -9 of the driver must not leave orphans training on)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _log(msg: str) -> None:
    print(msg, flush=True)


def write_failure(run_dir: Path, spec, error: str, retryable: bool, tb: str = "") -> None:
    """Record a failure the library could not record itself (before or outside training).

    Never overwrites a record that says done; a failed record written by run_training is kept and
    only gains the retryable flag.
    """
    from arena.records import amend_failure, utc_now, write_run_record
    from arena.results.run_record import RunRecord

    run_dir.mkdir(parents=True, exist_ok=True)

    def amend(rec) -> bool:
        rec.retryable = retryable
        rec.error = rec.error or error
        return True

    if not amend_failure(run_dir, amend):
        return
    write_run_record(run_dir, RunRecord(
        run_id=spec.run_id, status="failed", error=error, retryable=retryable, written_by="runner",
        config=spec.config, method={"name": spec.method}, target=spec.target, objective=spec.objective,
        sweep={**spec.sweep_section(), "stages": {}, "status": "failed"},
        traceback=tb[-4000:], finished=utc_now()))


def _clear_runner_failure(run_dir: Path) -> None:
    """A record the runner wrote into a folder without config.yaml blocks run_training ("folder not
    empty and not a run"); it carries no result, so it goes before the retry."""
    if has_config(run_dir) or not run_dir.is_dir():
        return
    for p in run_dir.iterdir():
        if p.name in (RECORD, LOCK) or p.name.startswith(f".{RECORD}."):
            p.unlink(missing_ok=True)


def _check_driver_alive() -> None:
    """PR_SET_PDEATHSIG is armed after fork: if the driver died in between, stop now."""
    pid = os.environ.get("ARENA_SWEEP_DRIVER_PID")
    if pid and os.getppid() != int(pid):
        _log("the sweep driver is gone; exiting")
        sys.exit(EXIT_BUSY)


def run(sweep_dir: Path, run_id: str) -> int:
    lock_file = lock_path(sweep_dir, run_id)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = open(lock_file, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _log(f"{run_id}: another worker holds {lock_file}; leaving it alone")
        return EXIT_BUSY
    spec = find_spec(sweep_dir, run_id)
    run_dir = Path(sweep_dir) / run_id
    state = run_state(sweep_dir, spec)
    if state.status == COMPLETE:
        _log(f"{run_id}: already complete")
        return EXIT_OK
    _log(f"== {run_id} (pid {os.getpid()}): {state.status}; to do: {', '.join(state.todo)}")
    threads = st.worker_threads(os.environ.get("ARENA_SWEEP_THREADS"), spec, _log)
    if "train" in state.todo:
        _clear_runner_failure(run_dir)
        t0 = time.perf_counter()
        try:
            st.train(spec, run_dir, _log, threads)
        except Exception as e:  # noqa: BLE001 — every failure of a run is recorded, not raised
            tb = traceback.format_exc()
            _log(tb)
            write_failure(run_dir, spec, f"{type(e).__name__}: {e}", retryable=False, tb=tb)
            return EXIT_FAILED
        _log(f"{run_id}: trained in {time.perf_counter() - t0:.1f}s")
        st.finish(run_dir, spec, "partial")
    ok = True
    for stage in state.todo:
        if stage == "train":
            continue
        t0 = time.perf_counter()
        _log(f"{run_id}: {stage} ...")
        try:
            info = st.STAGE_FUNCS[stage](spec, run_dir, spec.stages[stage], _log) or {}
        except Exception as e:  # noqa: BLE001
            _log(traceback.format_exc())
            st.mark(run_dir, spec, stage, "failed", time.perf_counter() - t0, error=f"{type(e).__name__}: {e}")
            ok = False
            continue
        st.mark(run_dir, spec, stage, "done", time.perf_counter() - t0, info=info)
        _log(f"{run_id}: {stage} done in {time.perf_counter() - t0:.1f}s")
    st.mark_skipped(run_dir, spec)
    st.finish(run_dir, spec, "complete" if ok else "failed")
    return EXIT_OK if ok else EXIT_FAILED


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m runners.worker", description=__doc__.splitlines()[0])
    p.add_argument("sweep_dir")
    p.add_argument("run_id")
    args = p.parse_args(argv)
    _set_parent_death_signal()
    _check_driver_alive()
    runtime_defaults()
    return run(Path(args.sweep_dir), args.run_id)


if __name__ == "__main__":
    sys.exit(main())
