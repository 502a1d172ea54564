"""Start, account for and stop a run's services (called by arena/experiment.py).

Everything started is listed in ctx.extras['open_services'] and closed by `close_services`, which
the experiment calls in a `finally`: a run that fails, is interrupted or finishes leaves no worker
or teacher process behind.
"""

from __future__ import annotations

import torch

from arena.errors import ConfigError


def check_runnable(services, dist) -> None:
    if services.active and dist.enabled:
        raise ConfigError("services", {"rollout": services.rollout.mode, "teacher": services.teacher.mode},
                          "sharded training (--nproc > 1) runs its rollouts and teacher inline: set both modes to inline")


def _opened(ctx) -> list:
    return ctx.extras.setdefault("open_services", [])


def start_teacher(ctx, ref: str):
    """A teacher service for `ref`, one per reference (MOPD domains sharing a teacher share it)."""
    from arena.services.teacher_service import RemoteTeacher

    for kind, known, svc in _opened(ctx):
        if kind == "teacher" and known == ref:
            return svc
    remote = RemoteTeacher(ref, ctx.extras["services"], ctx.device, ctx.precision, threads=torch.get_num_threads(),
                           log=ctx.extras.get("log", print))
    _opened(ctx).append(("teacher", ref, remote))
    return remote


def start_rollouts(cfg, ctx, method, log=print):
    """Install the rollout worker as ctx.extras['rollout_source'] (services.rollout.mode process/ray)."""
    services = cfg.services
    if services.rollout.mode == "inline":
        return None
    from arena.services.rollout_worker import AsyncRollouts

    # what rebuilds the wrapped model, nothing more: the worker scores no rewards and reads no data
    d = cfg.to_dict()
    model_only = {"model": d["model"], "method": d["method"], "target": d["target"], "train": d["train"],
                  "data_dir": d["data_dir"], "objective": {"name": "sft"}}
    source = AsyncRollouts(model_only, services, ctx.model, method, cfg.train.steps, ctx.device, ctx.precision,
                           threads=cfg.train.threads or torch.get_num_threads(), log=log)
    ctx.extras["rollout_source"] = source
    _opened(ctx).append(("rollout", None, source))
    return source


def service_stats(ctx) -> dict:
    out = {}
    for kind, ref, svc in _opened(ctx):
        if kind == "rollout":
            out["rollout"] = svc.stats()
        else:
            out.setdefault("teachers", {})[ref] = svc.stats()
    return out


def close_services(ctx) -> None:
    for _, _, svc in reversed(_opened(ctx)):
        try:
            svc.close()
        except Exception:  # closing is best effort; a dead service is already closed
            pass
    ctx.extras["open_services"] = []
    ctx.extras.pop("rollout_source", None)
