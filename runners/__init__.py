"""Sweeps: expansion (arena.sweeps), resume logic (state), executors (local processes, Ray).

    from runners import run_sweep
    from arena.sweeps.load import load_sweep_config
    summary = run_sweep(load_sweep_config("configs/quickstart.yaml"))

Runners call the library once per run in a worker process (`python -m runners.worker`) and never
reach into the training core.
"""

from runners.driver import SweepSummary, plan_sweep, run_sweep

__all__ = ["run_sweep", "plan_sweep", "SweepSummary"]
