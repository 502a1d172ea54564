"""`arena train --nproc N`: check everything a user can get wrong, then run N ranks under torchrun.

The ranks are `python -m arena train --config <resolved config>` under `torch.distributed.run`
(torchrun) with `--max-restarts 0`: when one rank dies, torchrun stops the others and exits
non-zero, and this launcher records the run as failed with the rank's reason (a rank that raised
records its own failure first; one killed outright cannot). Nothing is spawned, and nothing
written, until the process count, the batch split, the method and any checkpoint to resume from
have been checked. One node: torchrun's standalone rendezvous on a free loopback port. Several
nodes: the same command on every node with --nnodes, --node-rank and --rdzv-endpoint HOST:PORT.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

from arena.config import RunConfig, dump_yaml
from arena.errors import ArenaError, ConfigError


def available_devices(device: str) -> tuple[int, str]:
    """(how many ranks this machine can host, what they are): GPUs when training on CUDA, else cores."""
    import torch

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        return torch.cuda.device_count(), "CUDA devices"
    return os.cpu_count() or 1, "CPU cores"


def check_launch(cfg: RunConfig, nproc: int, nnodes: int = 1, devices_here: bool = True) -> None:
    """ConfigError for a process count or batch split that cannot work; nothing is written.
    `devices_here`: the ranks run on this machine, so it must have nproc devices."""
    if nproc < 1:
        raise ConfigError("--nproc", nproc, "must be >= 1")
    if nnodes < 1:
        raise ConfigError("--nnodes", nnodes, "must be >= 1")
    have, what = available_devices(cfg.train.device)
    if devices_here and nproc > have:
        raise ConfigError("--nproc", nproc, f"this machine has {have} {what}; ask for at most {have} processes "
                          "per node (more nodes: --nnodes with --rdzv-endpoint)")
    world = nproc * nnodes
    if cfg.train.grad_accum % world:
        raise ConfigError("train.grad_accum", cfg.train.grad_accum,
                          f"must be a multiple of the world size {world} (--nproc {nproc} x --nnodes {nnodes}): "
                          "each rank takes grad_accum / world of every step's micro-batches")
    from arena.components import build_components

    from arena.training.distributed import check_shardable

    method, _, _ = build_components(cfg)
    check_shardable(cfg, method)


def check_resume(cfg: RunConfig) -> str:
    """'new' | 'resume' | 'done' for cfg.out; ArenaError when its folder or last checkpoint belongs
    to another config (the same checks a rank makes, made before any rank starts)."""
    if not cfg.out:
        return "new"
    from arena.experiment import _check_out_dir, config_fingerprint
    from arena.training.checkpoint import list_checkpoints
    from arena.training.sharded_checkpoint import check_fingerprint

    out = Path(cfg.out)
    state = _check_out_dir(out, cfg)
    if state == "resume" and (ckpts := list_checkpoints(out / "checkpoints")):
        check_fingerprint(ckpts[-1], config_fingerprint(cfg))
    return state


def torchrun_command(config_path: Path, nproc: int, nnodes: int = 1, node_rank: int = 0,
                     rdzv_endpoint: str | None = None, rdzv_id: str = "arena") -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--max-restarts", "0"]
    if nnodes == 1 and not rdzv_endpoint:
        cmd.append("--standalone")
    else:
        if not rdzv_endpoint:
            raise ConfigError("--rdzv-endpoint", None, "several nodes need a HOST:PORT every node can reach")
        cmd += ["--nnodes", str(nnodes), "--node-rank", str(node_rank), "--rdzv-backend", "c10d",
                "--rdzv-endpoint", rdzv_endpoint, "--rdzv-id", rdzv_id]
    return cmd + ["-m", "arena", "train", "--config", str(config_path)]


def _rank_env(cfg: RunConfig, nproc: int) -> dict:
    env = dict(os.environ)
    env.setdefault("ARENA_DIST_TIMEOUT_S", "1800")
    if "OMP_NUM_THREADS" not in env:  # torchrun's default is 1 thread a rank; share the cores instead
        env["OMP_NUM_THREADS"] = str(cfg.train.threads or max(1, (os.cpu_count() or 1) // nproc))
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _failure_reason(rc: int, tail: deque) -> str:
    """torchrun's failure summary as one line: which rank ended how (a signal by name)."""
    import re
    import signal

    found, rank = [], None
    for ln in tail:
        if m := re.match(r"\s*rank\s*:\s*(\d+)", ln):
            rank = int(m.group(1))
        elif (m := re.match(r"\s*exitcode\s*:\s*(-?\d+)", ln)) and rank is not None:
            code = int(m.group(1))
            how = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() \
                else f"exit code {code}"
            if (f"rank {rank}: {how}") not in found:
                found.append(f"rank {rank}: {how}")
            rank = None
    return f"torchrun exited {rc}" + (f" ({'; '.join(found)})" if found else "")


def record_failure(cfg: RunConfig, reason: str) -> None:
    """A failed record for a run whose ranks could not record it themselves (killed, not raised)."""
    from arena.records import amend_failure, utc_now, write_run_record
    from arena.results.run_record import SCHEMA_VERSION, RunRecord

    out = Path(cfg.out)

    def amend(rec) -> bool:  # a rank recorded what it saw; add which rank died how
        if reason in (rec.error or ""):
            return False
        rec.error = f"{rec.error}; launcher: {reason}" if rec.error else reason
        return True

    if not amend_failure(out, amend):
        return
    out.mkdir(parents=True, exist_ok=True)
    write_run_record(out, RunRecord(
        schema_version=SCHEMA_VERSION, run_id=out.name, status="failed", error=reason, config=cfg.to_dict(),
        method={"name": cfg.method.name}, objective=cfg.objective.name, target=cfg.target.name,
        finished=utc_now(), written_by="launcher"))


def launch(cfg: RunConfig, nproc: int, nnodes: int = 1, node_rank: int = 0, rdzv_endpoint: str | None = None,
           log=print) -> int:
    """Run cfg on nproc ranks (per node); 0 done, 1 failed (recorded), 2 bad input (nothing written)."""
    check_launch(cfg, nproc, nnodes)
    if check_resume(cfg) == "done":
        log(f"{cfg.out}: run already finished; nothing to do (delete the folder to re-run)")
        return 0
    with tempfile.TemporaryDirectory(prefix="arena-launch-") as tmp:
        config_path = Path(tmp) / "config.yaml"
        config_path.write_text(dump_yaml(cfg))
        cmd = torchrun_command(config_path, nproc, nnodes, node_rank, rdzv_endpoint)
        tail: deque = deque(maxlen=60)
        proc = subprocess.Popen(cmd, env=_rank_env(cfg, nproc), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        try:
            for line in proc.stdout:
                tail.append(line)
                sys.stdout.write(line)
            rc = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait(timeout=30)
            raise
    if rc == 0:
        return 0
    if any("exitcode  : 2" in ln for ln in tail) or any(": error:" in ln and "arena train" in ln for ln in tail):
        return 2  # every rank refused the input (an ArenaError); the rank said why above
    reason = _failure_reason(rc, tail)
    if cfg.out:
        record_failure(cfg, reason)
    log(f"arena train: run failed on {nproc * nnodes} processes: {reason}"
        + (f" (recorded in {cfg.out}/record.json)" if cfg.out else ""))
    return 1


def refuse_nested() -> None:
    """--nproc inside a torchrun rank would launch ranks from ranks."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ArenaError("--nproc: this process is already a torchrun rank; drop --nproc under torchrun")
