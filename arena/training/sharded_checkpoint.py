"""Checkpoints that survive a change of world size (torch.distributed.checkpoint, DCP).

One process keeps arena's safetensors checkpoint (arena/training/checkpoint.py) unchanged. A
sharded run writes, per step folder:

- `dcp/`: the trainable tensors and the AdamW state as DCP shards (each rank writes its own;
  DCP's metadata records every tensor's global shape, so any number of ranks, one included and
  without a process group, can load it: that is what makes resume on another world size work);
- `trainable.safetensors`: the same trainable tensors gathered whole (rank 0), so every reader
  of checkpoints (`arena ilp`'s causes IV and V, a teacher loaded from a checkpoint) is unchanged;
- `state.json` (step, world size, config fingerprint, objective state), `objective.safetensors`,
  and `rng/rank-R.safetensors` (restored only on the same world size: another split of the work
  has no rank-for-rank counterpart; the seeded per-micro-batch sampling does not depend on it).

The folder is written under a temporary name and renamed by rank 0 after every rank has written
its shard, so a run killed mid-write keeps the previous checkpoint. A checkpoint whose config
fingerprint differs from the run's is refused (ArenaError) before anything is loaded.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from arena.errors import ArenaError
from arena.training import checkpoint as C
from arena.training import distributed as D

DCP = "dcp"


def _trainable_only(model, sd: dict) -> dict:
    names = set(D.trainable_names(model))
    return {k: v for k, v in sd.items() if k in names}


def save(folder: Path, step: int, model, method, opt, extra: dict, keep: int, objective_tensors: dict,
         dist: D.Dist) -> Path:
    if not dist.enabled:
        return C.save_checkpoint(folder, step, method.trainable_state_dict(model), opt, extra, keep=keep,
                                 objective_tensors=objective_tensors)
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final, tmp = folder / f"step-{step:06d}", folder / f".tmp-step-{step:06d}"
    if dist.main:
        folder.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "rng").mkdir(parents=True)
    D.barrier(dist)
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": _trainable_only(model, msd), "optim": osd}, checkpoint_id=str(tmp / DCP))
    full = D.full_trainable_state(model, dist)  # collective: every rank takes part, rank 0 keeps it
    save_file({"torch": torch.get_rng_state()}, str(tmp / "rng" / f"rank-{dist.rank}.safetensors"))
    if dist.main:
        save_file(full, str(tmp / "trainable.safetensors"))
        if objective_tensors:
            save_file({k: v.detach().cpu().contiguous() for k, v in objective_tensors.items()},
                      str(tmp / C.OBJECTIVE_TENSORS))
        (tmp / "state.json").write_text(json.dumps({"step": step, "world_size": dist.world, **extra}, indent=1))
    D.barrier(dist)
    if dist.main:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in C.list_checkpoints(folder)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    D.barrier(dist)
    return final


def check_fingerprint(path: Path, fingerprint: str | None) -> dict:
    """state.json of the checkpoint; ArenaError when another config wrote it."""
    state = json.loads((path / "state.json").read_text())
    theirs = state.get("config_fingerprint")
    if fingerprint and theirs and theirs != fingerprint:
        raise ArenaError(f"checkpoint {path}: written by a different config (fingerprint {theirs[:12]}, this run's "
                         f"{fingerprint[:12]}); resume it with the config that wrote it, or delete the checkpoints")
    return state


def restore(path: Path, opt, model, method, dist: D.Dist, fingerprint: str | None) -> dict:
    """Restore trainable weights, optimizer (and RNG where it maps) from `path`; returns state.json."""
    state = check_fingerprint(path, fingerprint)
    if (path / DCP).is_dir():
        _restore_dcp(path, opt, model, dist, state)
    elif not dist.enabled:
        trainable, state = C.load_checkpoint(path, opt)
        method.load_trainable_state_dict(model, trainable)
    else:
        _restore_single_into_sharded(path, opt, model, state)
    return state


def _restore_dcp(path: Path, opt, model, dist: D.Dist, state: dict) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, opt)
    sd = {"model": _trainable_only(model, msd), "optim": osd}
    try:
        dcp.load(sd, checkpoint_id=str(path / DCP))
    except Exception as e:  # a shape or key DCP cannot map: the checkpoint is not this model's
        raise ArenaError(f"checkpoint {path}: does not match this run's model or method ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})") from None
    set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"],
                   options=StateDictOptions(strict=False))
    rng = path / "rng" / f"rank-{dist.rank}.safetensors"
    if state.get("world_size", 1) == dist.world and rng.is_file():
        torch.set_rng_state(load_file(str(rng))["torch"])


def _restore_single_into_sharded(path: Path, opt, model, state: dict) -> None:
    """A one-process checkpoint resumed on N ranks: full tensors, scattered to each rank's shard."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    names = D.trainable_names(model)
    full = load_file(str(path / "trainable.safetensors"))
    if sorted(full) != sorted(names):
        raise ArenaError(f"checkpoint {path}: its trainable tensors do not match this run's model or method")
    opts = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, full, options=opts)
    flat = load_file(str(path / "optimizer.safetensors"))
    meta = state["optimizer"]
    per: dict[str, dict] = {}
    # one-process optimizer state is keyed by parameter index, in the order of the trainable
    # parameters (the loop's params list, which is named_parameters filtered by requires_grad)
    for key, v in [(k, t) for k, t in flat.items() if k.startswith("state.")] + list(meta["scalars"].items()):
        _, idx, k = key.split(".", 2)
        per.setdefault(names[int(idx)], {})[k] = v
    groups = [{**g, "params": names} for g in meta["param_groups"]]
    set_optimizer_state_dict(model, opt, {"state": per, "param_groups": groups}, options=opts)
