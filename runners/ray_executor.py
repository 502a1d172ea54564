"""Ray executor: one Ray task per run, each with its resource request (CPUs, and a GPU when the
cluster has them), each task starting the same worker process the local executor starts.

    arena sweep configs/peft-arena-math.yaml --executor ray --ray-address auto    # an existing cluster
    arena sweep configs/quickstart.yaml --executor ray --ray-address local        # a private local instance

On a cluster the sweep folder and ARENA_CACHE (base scores, activations, converted models) must be
on a filesystem every node sees, and arena must be installed on every node (or shipped with a
runtime_env). A driver already connected to Ray (`ray.init(...)` earlier in the process) is reused.
"""

from __future__ import annotations

import time
from typing import Callable

from arena.services.channel import ensure_ray
from runners.local import Outcome, Task


def _ray_task(cmd: list[str], env: dict, log: str, timeout_s) -> tuple[int, bool]:
    """Runs inside a Ray worker: start the run's worker process and wait for it."""
    import os as _os
    import signal
    import subprocess
    import time as _time

    _os.makedirs(_os.path.dirname(log), exist_ok=True)
    with open(log, "a") as f:
        f.write(f"\n===== attempt started {_time.strftime('%Y-%m-%d %H:%M:%S')} (ray) =====\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**_os.environ, **env}, start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s), False
        except subprocess.TimeoutExpired:
            _os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(), True
        except BaseException:  # task cancelled: take the worker down with it
            _os.killpg(proc.pid, signal.SIGKILL)
            raise


class RayExecutor:
    name = "ray"

    def __init__(self, address: str = "auto"):
        self.address = address
        self.started = False

    def describe(self) -> str:
        return f"ray executor (address {self.address})"

    def run(self, tasks: list[Task], on_start: Callable[[str], None], on_done: Callable[[Outcome], None]) -> None:
        ray, started, tmp = ensure_ray(self.address)
        self.started = started
        try:
            has_gpu = ray.cluster_resources().get("GPU", 0) > 0
            remote = ray.remote(_ray_task)
            refs = {}
            t0 = {}
            ids = {t.run_id for t in tasks}
            held = [t for t in tasks if t.after and t.after in ids]  # wait for their cache leader

            def submit(t: Task) -> None:
                opts = {"num_cpus": t.cpus, "num_gpus": t.gpus if has_gpu else 0, "max_retries": 0}
                refs[remote.options(**opts).remote(t.cmd, t.env, str(t.log), t.timeout_s)] = t
                t0[t.run_id] = time.monotonic()
                on_start(t.run_id)

            for t in tasks:
                if t not in held:
                    submit(t)
            try:
                while refs:
                    ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
                    for ref in ready:
                        t = refs.pop(ref)
                        for f in [f for f in held if f.after == t.run_id]:
                            held.remove(f)
                            submit(f)
                        try:
                            rc, timed_out = ray.get(ref)
                            note = ""
                        except Exception as e:  # noqa: BLE001 — the ray worker itself died
                            rc, timed_out, note = -9, False, f"ray task failed: {type(e).__name__}: {e}"
                        on_done(Outcome(t.run_id, rc, time.monotonic() - t0[t.run_id], timed_out, note))
            except BaseException:
                for ref in refs:
                    ray.cancel(ref, force=True)
                raise
        finally:
            if started:
                ray.shutdown()
            if tmp:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
