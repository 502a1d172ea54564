"""`arena sweep CONFIG`: run every method x objective x target x seed of a sweep config.

    arena sweep configs/quickstart.yaml                 # local, one run at a time; resumes when re-run
    arena sweep configs/quickstart.yaml --dry-run       # list the runs and their state
    arena sweep configs/peft-arena-math.yaml --executor ray --ray-address auto
    arena sweep configs/quickstart.yaml --set budget.steps=10 --set seeds=[0,1]

Re-running the same command skips finished runs (a finished sweep does nothing), resumes
interrupted ones and keeps failed ones failed unless --retry-failed. See docs/sweeps.md.
"""

from __future__ import annotations

from pathlib import Path

from arena.errors import ArenaError
from arena.sweeps.load import load_sweep_config
from runners import run_sweep


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a sweep config (methods x objectives x targets x seeds); resumable")
    p.add_argument("config", help="sweep YAML (e.g. configs/quickstart.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sweep field, e.g. --set budget.steps=10 --set seeds=[0,1] (repeatable)")
    p.add_argument("--out", help="sweep folder (default: the config's 'out', else results/<name>)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: worker processes on this machine (default); ray: one Ray task per run")
    p.add_argument("--ray-address", default="auto", help="ray cluster address, or 'local' for a private instance")
    p.add_argument("--jobs", type=int, help="runs at a time on the local executor (default: runner.jobs, 1)")
    p.add_argument("--retry-failed", action="store_true", help="run failed runs again (interrupted ones always are)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state; run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plan-check", action="store_true",
                   help="on a CUDA machine, start even the runs `arena plan` says will not fit this GPU's memory")
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = load_sweep_config(args.config, args.overrides)
    if args.jobs is not None and args.jobs <= 0:
        raise ArenaError(f"--jobs {args.jobs}: must be a positive integer")
    summary = run_sweep(cfg, executor=args.executor, jobs=args.jobs, ray_address=args.ray_address,
                        retry_failed=args.retry_failed, dry_run=args.dry_run, progress=not args.no_progress,
                        out=Path(args.out) if args.out else None, plan_check=not args.no_plan_check)
    print(summary.format())
    if not summary.dry_run and (summary.todo or summary.busy):
        print(f"next: arena dashboard --results {summary.out}   |   arena report {summary.out}")
    return 0 if summary.ok else 1
