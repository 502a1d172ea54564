"""Local executor: up to `jobs` worker processes at a time on this machine.

Each run is `python -m runners.worker SWEEP_DIR RUN_ID` in a new session, its output appended to
`.sweep/logs/<run_id>.log`. A worker dies with the driver (PR_SET_PDEATHSIG, see runners.worker),
so a kill -9 of `arena sweep` leaves no orphan writing into a run folder that the next invocation
is about to resume.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional


@dataclass
class Task:
    run_id: str
    cmd: list[str]
    env: dict  # variables to set for the worker on top of the executing process's environment
    log: Path
    cpus: float = 1.0
    gpus: float = 0.0
    timeout_s: Optional[float] = None
    after: Optional[str] = None  # start only once this run has ended (it fills the shared base caches)


@dataclass
class Outcome:
    run_id: str
    returncode: int
    seconds: float
    timed_out: bool = False
    note: str = ""


@dataclass
class _Running:
    task: Task
    proc: subprocess.Popen
    started: float
    log: object
    timed_out: bool = field(default=False)


def _open_log(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a")
    f.write(f"\n===== attempt started {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n")
    f.flush()
    return f


class LocalExecutor:
    name = "local"

    def __init__(self, jobs: int = 1, poll_s: float = 0.2):
        self.jobs = max(1, int(jobs))
        self.poll_s = poll_s
        self.running: dict[str, _Running] = {}
        self.stopped: list[str] = []  # runs terminated by stop() (Ctrl-C of the driver)

    def describe(self) -> str:
        return f"local executor, {self.jobs} run(s) at a time"

    def _start(self, t: Task) -> None:
        log = _open_log(t.log)
        env = {**os.environ, **t.env, "ARENA_SWEEP_DRIVER_PID": str(os.getpid())}
        proc = subprocess.Popen(t.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        self.running[t.run_id] = _Running(t, proc, time.monotonic(), log)

    def run(self, tasks: list[Task], on_start: Callable[[str], None], on_done: Callable[[Outcome], None]) -> None:
        queue = list(tasks)
        try:
            while queue or self.running:
                while queue and len(self.running) < self.jobs:
                    pending = {t.run_id for t in queue} | set(self.running)
                    ready = next((t for t in queue if not t.after or t.after not in pending), None)
                    if ready is None:
                        break
                    queue.remove(ready)
                    self._start(ready)
                    on_start(ready.run_id)
                for rid, r in list(self.running.items()):
                    rc = r.proc.poll()
                    elapsed = time.monotonic() - r.started
                    if rc is None and r.task.timeout_s and elapsed > r.task.timeout_s and not r.timed_out:
                        r.timed_out = True
                        self._kill(r, signal.SIGKILL)
                        continue
                    if rc is None:
                        continue
                    r.log.close()
                    del self.running[rid]
                    on_done(Outcome(rid, rc, elapsed, timed_out=r.timed_out))
                time.sleep(self.poll_s)
        finally:
            self.stop()

    @staticmethod
    def _kill(r: _Running, sig) -> None:
        try:
            os.killpg(r.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> list[str]:
        """Terminate every running worker (Ctrl-C of the driver); returns their run ids."""
        stopped = list(self.running)
        self.stopped += stopped
        for r in self.running.values():
            self._kill(r, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for r in self.running.values():
            try:
                r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._kill(r, signal.SIGKILL)
                r.proc.wait()
            r.log.close()
        self.running.clear()
        return stopped
