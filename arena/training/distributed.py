"""Sharded data-parallel training: one process per device, launched by torchrun, sharded with FSDP2.

A rank learns its place from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); with no
WORLD_SIZE (or 1) everything here is a no-op and the loop is today's single process. With N ranks:

- the model is sharded with PyTorch FSDP2 (`fully_shard`): each decoder layer is one unit (the
  model's own `_no_split_modules`), the root holds the rest (embeddings, tied head, final norm),
  so tied weights stay in one unit. Adapters are sharded with the layer they live in; FSDP2 shards
  per parameter, so frozen base and trainable adapter weights share a unit.
- each rank takes a contiguous slice of every step's micro-batches (`TrainContext.micro_range`),
  so the global batch and the data order are those of one process with the same config.
- gradients are *summed* across ranks (not FSDP's default mean): the loop already divides every
  micro-batch by the loss tokens of the whole step, so a sum gives exactly the one-process
  gradient; clipping then uses the global norm (FSDP's DTensor gradients reduce it across ranks).
- generation (rollouts, probes) runs inside `gathered(model)`: every unit unsharded once, no
  collective inside, so ranks may sample different lengths without deadlocking each other.

Process-group collectives time out after ARENA_DIST_TIMEOUT_S (default 1800 s), and torchrun
(run with --max-restarts 0 by `arena.training.launch`) stops every rank when one dies, so a dead
rank ends the run with its reason instead of a hang.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch

from arena.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def init_from_env(requested_device: str) -> tuple[Dist, torch.device | None]:
    """(Dist, this rank's device or None for the caller's choice). Joins the process group once."""
    import torch.distributed as dist

    world = env_world()
    if world <= 1:
        return SINGLE, None
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and requested_device in ("auto", "cuda") or requested_device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("train.device", requested_device, "CUDA is not available on this machine; use auto or cpu")
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get("ARENA_DIST_TIMEOUT_S", "1800")))
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout,
                                device_id=device if use_cuda else None)
    return Dist(rank, world, local), device


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _layer_classes(model: torch.nn.Module) -> set[str]:
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    return names


def shard(model: torch.nn.Module, d: Dist) -> int:
    """FSDP2-shard `model` in place: one unit per decoder layer (the model's `_no_split_modules`)
    and the root unit for the rest (embeddings, final norm, the tied head); returns the unit count.

    The root must run its forward to gather its weights, so under sharding arena's label-position
    logits go through the model's forward (`logits_to_keep`, arena/objectives/losses.py) rather
    than calling the decoder and the head directly.
    """
    from torch.distributed.fsdp import FSDPModule, fully_shard

    layers = _layer_classes(model)
    if not layers:
        raise ConfigError("model.name", type(model).__name__,
                          "sharded training needs a transformers model that names its decoder layer "
                          "(_no_split_modules); this one does not")
    units = [m for m in model.modules() if type(m).__name__ in layers]
    for m in units:
        fully_shard(m)
    fully_shard(model)
    model._arena_sharded = True  # read by the loop's fast paths (no cast cache) and by label_logits
    for m in model.modules():
        if isinstance(m, FSDPModule):
            # sum, not mean (see the module docstring); gloo has no PREMUL_SUM, so force plain SUM
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)
    return len(units) + 1


def check_shardable(cfg, method) -> None:
    """ConfigError for what cannot train FSDP-sharded (checked by the launcher and by every rank).

    Objectives must run the same forwards of the model on every rank in each step (each one
    all-gathers weights with the other ranks); one whose forwards depend on its data, as the
    self-teacher's re-scoring, does them inside the loop's gathered rollout block instead
    (arena/objectives/self_distill.py)."""
    from arena.methods.base import Method

    if type(method).on_step is not Method.on_step:
        raise ConfigError("method.name", method.name, "cannot train sharded (it reallocates its own parameters "
                          "after every step); run it with one process")


def _units(model: torch.nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(model: torch.nn.Module, d: Dist):
    """Every FSDP unit unsharded for the block (full weights on each rank, no collective inside)."""
    if not d.enabled:
        yield
        return
    units = _units(model)
    for m in units:
        m.set_reshard_after_forward(False)
        m.unshard()
    try:
        yield
    finally:
        for m in units:
            m.reshard()
            if m is not model:  # the root stays gathered between forward and backward (FSDP's root default)
                m.set_reshard_after_forward(True)


def all_sum(d: Dist, values: list[float]) -> list[float]:
    """Element-wise sum over ranks (float64, so token counts stay exact)."""
    if not d.enabled:
        return values
    import torch.distributed as dist

    # NCCL reduces only device tensors; gloo only CPU ones
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return t.tolist()


def mean_dicts(d: Dist, local: dict) -> dict:
    """The mean over ranks of each key's value (keys may differ between ranks)."""
    if not d.enabled:
        return local
    import torch.distributed as dist

    every: list = [None] * d.world
    dist.all_gather_object(every, local)
    keys = sorted({k for x in every for k in x})
    return {k: sum(x[k] for x in every if k in x) / sum(k in x for x in every) for k in keys}


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(d: Dist, obj):
    """Rank 0's `obj` on every rank."""
    if not d.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def scalar(x) -> float:
    """A float from a tensor that may be a (replicated) DTensor, as clip_grad_norm_ returns under FSDP."""
    full = getattr(x, "full_tensor", None)
    return float(full() if full is not None else x)


def trainable_names(model: torch.nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def full_trainable_state(model: torch.nn.Module, d: Dist) -> dict[str, torch.Tensor]:
    """The trainable tensors gathered whole on rank 0 ({} elsewhere): the single-process layout."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    names = trainable_names(model)
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not d.main:
        return {}
    return {n: full[n].detach().cpu().contiguous() for n in names}
