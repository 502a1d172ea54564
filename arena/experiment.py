"""One experiment end to end: validate -> load -> wrap -> train -> save -> probe -> record.

This is the seam between the library and everything that drives it: the CLI's `train` calls
`run_training`, and runners call it once per run in a subprocess. Validation happens before the
output folder is touched, so bad input writes nothing.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from arena.components import build_components
from arena.config import RunConfig, dump_yaml
from arena.errors import ArenaError, ConfigError, TrainingFailed
from arena.evaluation.heldout import greedy_accuracy, heldout_nll
from arena.evaluation.step_probe import make_step_probe
from arena.methods.base import Method
from arena.objectives.base import TrainContext
from arena.records import environment, read_record, read_run_record, utc_now, write_run_record
from arena.results.run_record import SCHEMA_VERSION, RunRecord
from arena.runs import FINAL, RESULT_NEUTRAL_TRAIN_KEYS, WEIGHTS, load_and_wrap
from arena.services.lifecycle import check_runnable, close_services, service_stats, start_rollouts, start_teacher
from arena.training import distributed as D
from arena.training import loop  # loop.train looked up per call: a benchmark wraps it to time each step
from arena.training.device import pick_device, resolve_precision


def enable_activation_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in backward (transformers' switch, non-reentrant:
    no input-grad hack needed for adapters, and it composes with FSDP2); the recomputation runs with
    the forward's attention implementation (arena/training/varlen.py, padding-free rows)."""
    from arena.training.varlen import recompute_context_fn

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ConfigError("train.activation_checkpointing", True, f"{type(base).__name__} does not support it")
    kwargs = {"use_reentrant": False, "context_fn": recompute_context_fn(model)}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name goes in v6
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _result_config(d: dict) -> dict:
    """The config without what changes nothing about the result (what resume compares)."""
    return {**d, "out": None, "train": {k: v for k, v in d["train"].items() if k not in RESULT_NEUTRAL_TRAIN_KEYS}}


def config_fingerprint(cfg: RunConfig) -> str:
    """sha256 of the result-relevant config: written into every checkpoint, checked on resume."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(_result_config(cfg.to_dict()), sort_keys=True, default=str).encode()).hexdigest()


def _check_out_dir(out: Path, cfg: RunConfig) -> str:
    """'new' | 'resume' | 'done'. A folder holding another config is refused, never overwritten."""
    if not out.exists():
        return "new"
    saved = out / "config.yaml"
    if not saved.is_file():
        if any(out.iterdir()):
            raise ArenaError(f"out {out}: exists, is not empty and is not an arena run folder; choose another folder")
        return "new"
    import yaml

    old = yaml.safe_load(saved.read_text())
    new = cfg.to_dict()
    # Only what changes the result must match; presentation knobs may differ between attempts.
    if _result_config(old) != _result_config(new):
        diff = [k for k in new if _result_config(old).get(k) != _result_config(new).get(k)]
        raise ArenaError(f"out {out}: holds a run with a different config (sections differ: {', '.join(diff)}); "
                         "use another out folder or delete the folder")
    rec = read_run_record(out)
    if rec and rec.status == "done":
        return "done"
    return "resume"


def run_probes(cfg: RunConfig, model, tok, target, device, precision) -> dict:
    if cfg.probe.heldout <= 0:
        return {}
    ex = target.heldout_examples(cfg.probe.heldout, cfg.probe.seed)
    out = {"target_nll": heldout_nll(model, tok, ex, device, precision)}
    if cfg.probe.greedy > 0:
        out["greedy"] = greedy_accuracy(model, tok, ex[: cfg.probe.greedy], device, precision, target.answer_format,
                                        cfg.probe.max_new_tokens)
    return out


def save_final(run_dir: Path, method, model, dist: D.Dist = D.SINGLE) -> None:
    """final/trainable.safetensors; a sharded run gathers the tensors whole first (same layout)."""
    weights = D.full_trainable_state(model, dist) if dist.enabled else method.trainable_state_dict(model)
    if dist.main:
        folder = run_dir / FINAL
        folder.mkdir(parents=True, exist_ok=True)
        save_file(weights, str(folder / WEIGHTS))


def _shard(cfg: RunConfig, method, model, dist: D.Dist) -> None:
    """FSDP2-shard the wrapped model for a torchrun rank (after the base probes, which every rank
    runs on its whole copy); methods that rewrite themselves during training are refused."""
    D.check_shardable(cfg, method)
    D.shard(model, dist)


def run_training(cfg: RunConfig, log: Callable[[str], None] = print) -> dict:
    """Train one run into cfg.out (or in memory when cfg.out is None). Returns the run record.

    Raises ArenaError for bad input before anything is written; a failure during training is
    recorded in record.json with status 'failed' and re-raised.
    """
    method, target, objective = build_components(cfg)
    dist, rank_device = D.init_from_env(cfg.train.device)  # a torchrun rank, or one process
    try:
        return _run_training(cfg, method, target, objective, dist, rank_device, log if dist.main else (lambda _: None))
    finally:
        D.shutdown()


def _run_training(cfg: RunConfig, method, target, objective, dist: D.Dist, rank_device, log) -> dict:
    device = rank_device or pick_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)
    if dist.enabled and cfg.train.grad_accum % dist.world:
        raise ConfigError("train.grad_accum", cfg.train.grad_accum,
                          f"must be a multiple of the number of processes ({dist.world}): each rank takes "
                          "grad_accum / N of every step's micro-batches")
    out = Path(cfg.out) if cfg.out else None
    state = _check_out_dir(out, cfg) if out else "new"
    if state == "done":
        log(f"{out}: run already finished; nothing to do (delete the folder to re-run)")
        return read_record(out)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)

    seed_everything(cfg.train.seed)
    t0 = time.perf_counter()
    model, tok, info = load_and_wrap(cfg, method, device)  # may raise ConfigError (shapes): nothing written yet
    t_load = time.perf_counter() - t0
    if cfg.train.activation_checkpointing:
        enable_activation_checkpointing(model)
    ctx = TrainContext(model=model, tokenizer=tok, target=target, train=cfg.train, device=device,
                       precision=precision, seed=cfg.train.seed, rank=dist.rank, world=dist.world)
    ctx.extras["config_fingerprint"] = config_fingerprint(cfg)
    check_runnable(cfg.services, dist)
    ctx.extras.update(services=cfg.services, log=log)
    if cfg.services.teacher.mode != "inline":
        ctx.extras["start_teacher"] = lambda ref: start_teacher(ctx, ref)
    try:
        return _train_with_services(cfg, ctx, method, objective, dist, device, precision, out, info, t0, t_load, log)
    finally:
        close_services(ctx)  # no worker or teacher process outlives its run


def _train_with_services(cfg: RunConfig, ctx, method, objective, dist: D.Dist, device, precision, out, info, t0,
                         t_load, log) -> dict:
    model, tok, target = ctx.model, ctx.tokenizer, ctx.target
    if cfg.train.eval_every:
        # Every eval_every steps: general NLL proxy + target NLL against the base, in train_log.jsonl.
        ctx.extras["step_probe"] = make_step_probe(cfg, tok, target, device, precision, log=log)
    # Read every data file (train set, held-out probe set) before the run folder exists: a
    # malformed line is bad input (DataError), and bad input writes nothing.
    t1 = time.perf_counter()
    data_stats = objective.prepare(ctx)
    t_data = time.perf_counter() - t1
    t2 = time.perf_counter()
    base_probes = run_probes(cfg, model, tok, target, device, precision)
    t_probe = time.perf_counter() - t2
    if dist.enabled:
        _shard(cfg, method, model, dist)
    if out and dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_yaml(cfg))
    D.barrier(dist)
    trainable, total = Method.count_parameters(model)
    lr = cfg.train.lr or method.default_lr
    record = RunRecord(
        schema_version=SCHEMA_VERSION, run_id=out.name if out else None, status="running", created=utc_now(), config=cfg.to_dict(),
        model=info.to_dict(),
        method={"name": method.name, "trainable_params": trainable, "total_params": total,
                "trainable_fraction": trainable / total, "lr": lr, "additive": method.additive},
        objective=cfg.objective.name, target=cfg.target.name, device=str(device), precision=precision,
        environment=environment(), data=data_stats, probes={"base": base_probes})
    try:
        items = (f"{data_stats['documents']} documents" if "examples" not in data_stats and "documents" in data_stats
                 else f"{data_stats.get('examples', '?')} examples")
        start_rollouts(cfg, ctx, method, log)
        log(f"{method.name}: {trainable:,} trainable / {total:,} params; lr {lr:g}; {precision} on {device}; "
            f"{items} -> {data_stats.get('rows', '?')} rows"
            + (f" ({data_stats['layout']})" if "layout" in data_stats else ""))
        result = loop.train(ctx, objective, method, out, lr, dist)
        record.train = {k: v for k, v in asdict(result).items() if k != "history"}
        if dist.enabled:
            record.train["world_size"] = dist.world
        if cfg.services.active:
            record.train["services"] = service_stats(ctx)
        if out:
            save_final(out, method, model, dist)
        t3 = time.perf_counter()
        with D.gathered(model, dist):  # every rank scores the same examples on its whole copy
            record.probes["tuned"] = run_probes(cfg, model, tok, target, device, precision)
        t_probe += time.perf_counter() - t3
        record.timings = {"load_s": round(t_load, 2), "data_s": round(t_data, 2), "train_s": result.seconds,
                          "probe_s": round(t_probe, 2), "total_s": round(time.perf_counter() - t0, 2)}
        record.status = "done"
    except (TrainingFailed, Exception) as e:  # recorded, then re-raised for the caller's exit code
        record.status = "failed"
        record.error = f"{type(e).__name__}: {e}"
        record.traceback = traceback.format_exc()[-4000:]
        record.finished = utc_now()
        if out and dist.main:
            write_run_record(out, record)
        raise
    record.finished = utc_now()
    if out and dist.main:
        write_run_record(out, record)
    # in-memory callers (sweeps, tests) may evaluate without reloading
    return {**record.to_dict(), "_model": model}


def format_run_summary(record: dict) -> str:
    """A short human summary of a run record (what `arena train` prints)."""
    lines = [f"status: {record.get('status')}"]
    tr = record.get("train") or {}
    if tr:
        lines.append(f"train: {tr['steps']} steps, {tr['tokens']:,} tokens in {tr['seconds']:.1f}s "
                     f"({tr['tokens_per_second']:.0f} tok/s), loss {tr['first_loss']:.4f} -> {tr['last_loss']:.4f}, "
                     f"peak mem {tr['peak_memory_mb']:.0f} MB")
    pr = record.get("probes") or {}
    b, t = pr.get("base", {}), pr.get("tuned", {})
    if b.get("target_nll") and t.get("target_nll"):
        lines.append(f"held-out target NLL: {b['target_nll']['nll']:.4f} -> {t['target_nll']['nll']:.4f} "
                     f"(n={t['target_nll']['n']}, ±{t['target_nll']['se']:.4f})")
    if b.get("greedy") and t.get("greedy"):
        lines.append(f"greedy accuracy: {b['greedy']['accuracy']:.3f} -> {t['greedy']['accuracy']:.3f} (n={t['greedy']['n']})")
    return "\n".join(lines)
