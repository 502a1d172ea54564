"""The one training loop (nanochat-style: plain, readable, no trainer class).

It owns what must be identical for every method and objective of a sweep: data order (from the
objective, seeded), token budget (steps × batch × seq_len), AdamW with warm-up + schedule,
gradient accumulation normalised by the step's loss tokens, clipping, bf16 autocast over fp32
master weights, NaN/inf detection, jsonl logging, checkpointing and resume.
After each optimizer step the objective's `after_step` may log keys and end training early
(`"stop": True`); its `state_dict()` rides in every checkpoint's state.json and is restored on
resume, so decisions taken during training (SFT's resampling, progressive epochs) replay exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from arena.errors import TrainingFailed
from arena.generation.seeds import derive_seed
from arena.objectives.base import Objective, TrainContext
from arena.training.cast_cache import FrozenCastCache
from arena.training.checkpoint import list_checkpoints, load_objective_tensors
from arena.training.sharded_checkpoint import restore as load_checkpoint, save as save_checkpoint
from arena.training.device import peak_memory_mb
from arena.training.fused_lora import install_fused_lora
from arena.training import distributed as D
from arena.training.dropout import use_skip_dropout
from arena.training.fused_ops import install_fused_ops
from arena.training.schedule import lr_factor


DROPOUT_TAG = 5  # derive_seed tag of the dropout stream (rollouts use 1-4)


@dataclass
class TrainResult:
    steps: int
    resumed_from: int
    tokens: int  # real (non-padding) tokens processed
    loss_tokens: int
    seconds: float
    tokens_per_second: float
    first_loss: float | None
    last_loss: float | None
    peak_memory_mb: float
    fast_paths: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    stopped_early_at: int | None = None  # the step an objective's after_step ended training at
    objective_state: dict = field(default_factory=dict)  # Objective.state_dict() at the end (if any)


def _truncate_log(log_path: Path, after_step: int) -> None:
    """Drop log lines beyond the resumed checkpoint so a resumed run logs each step once."""
    if not log_path.exists():
        return
    keep = [ln for ln in log_path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= after_step]
    log_path.write_text("".join(ln + "\n" for ln in keep))


def install_fast_paths(model: torch.nn.Module, cfg, device: torch.device) -> tuple[dict, list]:
    """Same-law, same-result implementation swaps for the duration of training (see
    arena/training/dropout.py and cast_cache.py); returns (what was installed, undo callables)."""

    info, undo = {}, []
    sharded = bool(getattr(model, "_arena_sharded", False))
    if cfg.dropout_sampler == "skip" or (cfg.dropout_sampler == "auto" and device.type == "cpu"):
        restore = use_skip_dropout(model)
        undo.append(restore)
        info["skip_dropout_modules"] = restore.count
    # not under FSDP: its frozen weights are re-gathered every forward, there is no copy to keep
    if not sharded and (cfg.cast_cache == "on" or (cfg.cast_cache == "auto" and device.type == "cpu")):
        cache = FrozenCastCache(model)
        undo.append(cache.remove)
        info["cast_cache_linears"] = len(cache)
    if cfg.fused_rope or cfg.fused_rmsnorm:
        restore_fused = install_fused_ops(model, rope=cfg.fused_rope, rmsnorm=cfg.fused_rmsnorm)
        undo.append(restore_fused)
        info.update(restore_fused.counts)
    if cfg.fused_lora == "on" or (cfg.fused_lora == "auto" and device.type == "cpu"):
        restore_lora = install_fused_lora(model)
        undo.append(restore_lora)
        if restore_lora.count:
            info["fused_lora_modules"] = restore_lora.count
    return info, undo


def train(ctx: TrainContext, objective: Objective, method, out_dir: Path | None, lr: float,
          dist: D.Dist = D.SINGLE) -> TrainResult:
    """Train `ctx.model` in place; with `dist` (a torchrun rank) the model is already FSDP-sharded
    and only rank 0 writes the log and the checkpoint's JSON (every rank writes its DCP shard)."""
    cfg = ctx.train
    model = ctx.model
    fast_paths, undo = install_fast_paths(model, cfg, ctx.device)
    try:
        return _train(ctx, objective, method, out_dir, lr, fast_paths, dist)
    finally:
        for fn in reversed(undo):
            fn()


def _train(ctx: TrainContext, objective: Objective, method, out_dir: Path | None, lr: float,
           fast_paths: dict, dist: D.Dist) -> TrainResult:
    cfg = ctx.train
    model = ctx.model
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel over all parameters (CPU and CUDA); torch's default on CPU is a Python
    # loop of ~8 ops per tensor, 15 ms a step for LoRA's 420 small tensors vs 3 ms fused
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999), eps=1e-8,
                            fused=fused or None)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
    )
    ckpt_dir = out_dir / "checkpoints" if out_dir else None
    log_path = out_dir / "train_log.jsonl" if out_dir else None

    start = 0
    if ckpt_dir is not None and (ckpts := list_checkpoints(ckpt_dir)):
        state = load_checkpoint(ckpts[-1], opt, model, method, dist, ctx.extras.get("config_fingerprint"))
        objective.load_state_dict(state.get("objective", {}))
        objective.load_tensor_state(load_objective_tensors(ckpts[-1]))
        start = state["step"]
        sched.last_epoch = start - 1
        with warnings.catch_warnings():  # "step() before optimizer.step()": intended on resume
            warnings.simplefilter("ignore", UserWarning)
            sched.step()  # re-derive the LR for `start` from the pure schedule
    if log_path is not None and dist.main:
        # Steps logged after the checkpoint we restart from (or all of them, when a killed run had
        # no checkpoint yet) are redone: drop them so every step is logged exactly once.
        _truncate_log(log_path, start)

    history, tokens, loss_tokens = [], 0, 0
    first_loss = last_loss = stopped_at = None
    model.train()
    progress = None
    if cfg.progress and dist.main:
        from tqdm.auto import tqdm

        progress = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    t_start = time.perf_counter()
    log_file = open(log_path, "a") if log_path and dist.main else None
    gathered = D.gathered if objective.needs_rollouts else (lambda m, d: contextlib.nullcontext())
    try:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            with gathered(model, dist):  # rollouts sample from whole weights, no collective inside
                batches = objective.batches(ctx, step)
            step_loss, step_tokens, step_real, metrics = 0.0, 0, 0, {}
            # Normalise by the loss tokens of the whole step (all ranks) when the objective knows
            # them up front (SFT), so accumulation and ranks give exactly the gradient of one large
            # batch; otherwise (rollouts) average the micro-batch means over the step's micro-batches.
            known = all("n_loss_tokens" in b for b in batches)
            step_norm = max(1, int(D.all_sum(dist, [sum(b["n_loss_tokens"] for b in batches)])[0])) if known else None
            n_micro = len(batches) * dist.world
            for i, batch in enumerate(batches):
                m = ctx.rank * len(batches) + i  # the micro-batch's index in the step (ctx.micro_range)
                # dropout masks drawn from a seed of (seed, step, micro-batch): the same masks
                # whichever rank computes the micro-batch, and on resume
                torch.manual_seed(derive_seed(ctx.seed, step, m, DROPOUT_TAG))
                out = objective.loss(ctx, batch)
                step_tokens += out.n_tokens
                step_real += int(batch.get("n_real", 0))
                scale = step_norm if known else max(1, out.n_tokens) * n_micro
                (out.loss_sum / scale).backward()
                step_loss += float(out.loss_sum.detach())
                for k, v in out.metrics.items():
                    metrics[k] = metrics.get(k, 0.0) + float(v) / len(batches)
            reg = method.regularizer(model)  # once per step, after the step's micro-batches
            if reg is not None:
                reg.backward()
                metrics["regularizer"] = float(reg.detach())
            if dist.enabled:  # the step's totals and metric means over every rank's micro-batches
                step_loss, step_tokens, step_real = D.all_sum(dist, [step_loss, step_tokens, step_real])
                step_tokens, step_real = int(step_tokens), int(step_real)
                metrics = D.mean_dicts(dist, metrics)
            loss_value = step_loss / max(1, step_tokens)
            if not math.isfinite(loss_value):
                raise TrainingFailed(f"non-finite loss ({loss_value}) at step {step}")
            if cfg.max_grad_norm > 0 or dist.enabled:  # under FSDP: the global norm, reduced over ranks
                grad_norm = D.scalar(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or math.inf))
            else:
                grad_norm = float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
            if not math.isfinite(grad_norm):
                raise TrainingFailed(f"non-finite gradient norm ({grad_norm}) at step {step}")
            cur_lr = opt.param_groups[0]["lr"]
            opt.step()
            method.on_step(model, step)
            sched.step()
            opt.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0  # before the hook: its scoring is no part of the step's throughput
            with gathered(model, dist):
                hooked = objective.after_step(ctx, step)
            stop = bool(hooked.pop("stop", False))
            tokens += step_real
            loss_tokens += step_tokens
            first_loss = loss_value if first_loss is None else first_loss
            last_loss = loss_value
            rec = {"step": step + 1, "loss": round(loss_value, 6), "lr": cur_lr, "grad_norm": round(grad_norm, 6),
                   "tokens": step_real, "loss_tokens": step_tokens, "tokens_per_s": round(step_real / dt, 1),
                   "seconds": round(dt, 4), **{k: round(v, 6) for k, v in metrics.items()}, **hooked}
            probe = ctx.extras.get("step_probe")
            if probe is not None and cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
                with D.gathered(model, dist):
                    rec["probe"] = probe(model, step + 1)
                model.train()
            history.append(rec)
            if log_file and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps or stop or hooked):
                log_file.write(json.dumps(rec) + "\n")
                log_file.flush()
            if progress:
                progress.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{step_real / dt:.0f}")
                progress.update(1)
            if stop and step + 1 < cfg.steps:
                stopped_at = step + 1
                break
            if ckpt_dir is not None and cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                extra = {"loss": loss_value, "config_fingerprint": ctx.extras.get("config_fingerprint")}
                if state := objective.state_dict():
                    extra["objective"] = state
                save_checkpoint(ckpt_dir, step + 1, model, method, opt, extra, keep=cfg.keep_checkpoints,
                                objective_tensors=objective.tensor_state(), dist=dist)
    finally:
        if log_file:
            log_file.close()
        if progress:
            progress.close()
    seconds = time.perf_counter() - t_start
    return TrainResult(
        steps=stopped_at or cfg.steps,
        resumed_from=start,
        tokens=tokens,
        loss_tokens=loss_tokens,
        seconds=round(seconds, 3),
        tokens_per_second=round(tokens / seconds, 1) if seconds > 0 else 0.0,
        first_loss=first_loss,
        last_loss=last_loss,
        peak_memory_mb=round(peak_memory_mb(ctx.device), 1),
        fast_paths=fast_paths,
        history=history,
        stopped_early_at=stopped_at,
        objective_state=objective.state_dict(),
    )
