"""`arena train`: one run of one method on one target with one objective."""

from __future__ import annotations

import os
import sys

from arena.config import dump_yaml, load_run_config
from arena.errors import TrainingFailed


def add_run_arguments(p) -> None:
    """Flags shared by commands that build a RunConfig (shortcuts for common --set keys)."""
    p.add_argument("--config", help="run config YAML (fields: model, method, target, objective, train, probe)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set train.lr=1e-4 --set method.rank=16 (repeatable)")
    p.add_argument("--model", help="catalog name (smollm2-135m-instruct, tiny), local folder or hub id")
    p.add_argument("--method", help="method name (see `arena methods`)")
    p.add_argument("--target", help="target name (see `arena targets`)")
    p.add_argument("--objective", help="objective name (see `arena objectives`)")
    p.add_argument("--steps", type=int, help="optimizer steps (train.steps)")
    p.add_argument("--lr", type=float, help="peak learning rate (train.lr; default: the method's)")
    p.add_argument("--seed", type=int, help="seed for init, data order and dropout (train.seed)")
    p.add_argument("--data-dir", help="benchmark data folder (default: ARENA_DATA_DIR or ../shared/data)")
    p.add_argument("--out", help="run folder (config, log, checkpoints, final weights, record.json)")
    p.add_argument("--teacher", help="distillation teacher (objective.teacher; opd, gkd): run folder or model")
    p.add_argument("--lmbda", type=float, help="GKD on-policy probability (objective.lmbda)")
    p.add_argument("--beta", type=float, help="GKD divergence: 0 forward KL .. 1 reverse KL (objective.beta)")


def config_from_args(args):
    shortcuts = [f"{k}={v}" for k, v in (
        ("model.name", args.model), ("method.name", args.method), ("target.name", args.target),
        ("objective.name", args.objective), ("train.steps", args.steps), ("train.lr", args.lr),
        ("train.seed", args.seed), ("data_dir", args.data_dir), ("out", args.out),
        ("objective.teacher", getattr(args, "teacher", None)), ("objective.lmbda", getattr(args, "lmbda", None)),
        ("objective.beta", getattr(args, "beta", None)),
    ) if v is not None]
    # Shortcut flags first so an explicit --set wins over them.
    return load_run_config(args.config, shortcuts + list(args.overrides))


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train one method on one target (SFT by default)")
    add_run_arguments(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    g = p.add_argument_group("sharded training (FSDP2 under torchrun; docs/distributed.md)")
    g.add_argument("--nproc", type=int, help="processes (GPUs, or CPU cores on a CPU machine) per node")
    g.add_argument("--nnodes", type=int, default=1, help="nodes (run the same command on each)")
    g.add_argument("--node-rank", type=int, default=0, help="this node's rank (0 .. nnodes-1)")
    g.add_argument("--rdzv-endpoint", help="HOST:PORT of the rendezvous every node reaches (nnodes > 1)")
    p.set_defaults(func=run)


def run(args) -> int:
    from arena.experiment import format_run_summary, run_training  # imports torch

    cfg = config_from_args(args)
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    if args.nproc is not None or args.nnodes != 1:
        from arena.training.launch import launch, refuse_nested

        refuse_nested()
        return launch(cfg, args.nproc or 1, args.nnodes, args.node_rank, args.rdzv_endpoint)
    rank0 = int(os.environ.get("RANK", "0") or 0) == 0  # under torchrun only rank 0 prints
    try:
        record = run_training(cfg)
    except TrainingFailed as e:
        print(f"arena train: run failed: {e}" + (f" (recorded in {cfg.out}/record.json)" if cfg.out else ""), file=sys.stderr)
        return 1
    if rank0:
        print(format_run_summary(record))
        if cfg.out:
            print(f"record: {cfg.out}/record.json")
    return 0
