"""`arena plan CONFIG`: per-device memory and time of every run, and which will not fit.

    arena plan configs/peft-arena-math.yaml --gpus 8 --gpu-mem 80     # a sweep on 8 x 80 GB
    arena plan --config run.yaml --gpus 2 --gpu-mem 24                 # one run (arena train's config)

Exit 0 when every run fits, 2 when one does not (each such run is named with the numbers that
say why). Without --gpu-mem the limit is this machine's: one GPU's memory, or the host's RAM.
Formulas: arena/planning/memory.py and plan.py; checked against measured peaks in
docs/distributed.md#planner.
"""

from __future__ import annotations

import json
import os

from arena.errors import ArenaError, ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="per-device memory and time of every run of a sweep; refuses what will not fit")
    p.add_argument("sweep", nargs="?", help="sweep YAML (as for arena sweep)")
    p.add_argument("--config", help="a run config instead (as for arena train)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the config (repeatable)")
    p.add_argument("--gpus", type=int, help="devices available (default: this machine's GPUs, or 1 CPU)")
    p.add_argument("--gpu-mem", type=float, help="GiB per device (default: this machine's)")
    p.add_argument("--gpus-per-run", type=int, help="ranks per run (default: runner.gpus_per_run; --nproc for a run)")
    p.add_argument("--tflops", type=float, default=989.0, help="dense bf16 TFLOP/s per device (H100 SXM: 989)")
    p.add_argument("--mfu", type=float, default=0.35, help="training model-FLOPs utilisation (default 0.35)")
    p.add_argument("--gen-mfu", type=float, default=0.05, help="sampling utilisation (default 0.05, decode-bound)")
    p.add_argument("--headroom", type=float, default=0.2,
                   help="share of each device's memory kept free for fragmentation and the plan's error (default 0.2)")
    p.add_argument("--label-fraction", type=float, default=1.0,
                   help="share of SFT tokens that carry a loss (logits are kept only there; 1.0 = upper bound)")
    p.add_argument("--json", action="store_true", help="one JSON object per run instead of the table")
    p.set_defaults(func=run)


def local_devices() -> tuple[int, float, str]:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return torch.cuda.device_count(), props.total_memory / 2**30, "GPU"
    import psutil

    return 1, psutil.virtual_memory().total / 2**30, "CPU (host RAM)"


def _check(args) -> None:
    for name in ("gpus", "gpus_per_run"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ConfigError(f"--{name.replace('_', '-')}", v, "must be >= 1")
    for name in ("gpu_mem", "tflops"):
        v = getattr(args, name)
        if v is not None and not v > 0:
            raise ConfigError(f"--{name.replace('_', '-')}", v, "must be > 0")
    for name in ("mfu", "gen_mfu", "label_fraction"):
        v = getattr(args, name)
        if not 0 < v <= 1:
            raise ConfigError(f"--{name.replace('_', '-')}", v, "must be in (0, 1]")
    if not 0 <= args.headroom < 1:
        raise ConfigError("--headroom", args.headroom, "must be in [0, 1)")
    if bool(args.sweep) == bool(args.config):
        raise ArenaError("arena plan: give a sweep config or --config RUN.yaml (one of them)")


def run(args) -> int:
    _check(args)
    from arena.planning.memory import GiB
    from arena.planning.plan import Devices, plan_run, plan_sweep

    count, mem, kind = local_devices()
    dev = Devices(count=args.gpus or count, mem_gib=args.gpu_mem or mem, tflops=args.tflops, mfu=args.mfu,
                  gen_mfu=args.gen_mfu, headroom=args.headroom, kind="GPU" if args.gpus or args.gpu_mem else kind)
    if args.sweep:
        from arena.sweeps.load import load_sweep_config

        plans = plan_sweep(load_sweep_config(args.sweep, args.overrides), dev, args.gpus_per_run, args.label_fraction)
    else:
        from arena.config import load_run_config

        cfg = load_run_config(args.config, args.overrides)
        plans = [plan_run(cfg, dev, args.gpus_per_run or 1, name=os.path.basename(args.config),
                          label_fraction=args.label_fraction)]
    bad = [p for p in plans if not p.fits(dev)]
    if args.json:
        for p in plans:
            print(json.dumps({"run": p.name, "world": p.world, "fits": p.fits(dev), "hours": round(p.hours, 3),
                              "peak_gib": round(p.peak / GiB, 3), "teacher_gib": round(p.teacher_bytes / GiB, 3),
                              **{k: round(v / GiB, 3) for k, v in p.memory.to_dict().items()}}))
    else:
        print(f"devices: {dev.count} x {dev.mem_gib:.0f} GiB ({dev.kind}, {dev.usable / GiB:.1f} usable); time at {dev.tflops:g} TFLOP/s x "
              f"MFU {dev.mfu:g} (sampling {dev.gen_mfu:g})")
        print(f"{'run':58s} {'ranks':>5s} {'weights':>8s} {'grads':>7s} {'optim':>7s} {'activ':>7s} {'logits':>7s} "
              f"{'rollout':>8s} {'peak GiB':>9s} {'hours':>7s}  fits")
        for p in plans:
            m = p.memory
            print(f"{p.name[:58]:58s} {p.world:5d} {m.weights / GiB:8.2f} {m.gradients / GiB:7.2f} "
                  f"{m.optimizer / GiB:7.2f} {m.activations / GiB:7.2f} {m.logits / GiB:7.2f} {m.rollout / GiB:8.2f} "
                  f"{p.peak / GiB:9.2f} {p.hours:7.2f}  {'yes' if p.fits(dev) else 'NO'}")
        total = sum(p.hours * p.world for p in plans) / max(1, dev.count)
        print(f"{len(plans)} runs; {len(bad)} will not fit; training + sampling ~{total:.1f} h on {dev.count} "
              "devices (evaluation not counted)")
        for p in plans:
            for n in p.notes:
                print(f"note: {p.name}: {n}")
    if bad:
        raise ArenaError(f"{len(bad)} of {len(plans)} runs will not fit: "
                         + "; ".join(f"{p.name}: {p.why_not(dev)}" for p in bad[:3]) + (" ..." if len(bad) > 3 else ""))
    return 0
