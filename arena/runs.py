"""The run folder: what one is, its config, its model, and the one locked way to update its record.

A run folder is what `run_training` writes: `config.yaml` (the resolved RunConfig), `final/`
(the trainable weights) and `record.json` (the run record, `arena.records`). Every stage after
training (evaluation, diagnostics, interpolation, a teacher loaded from a run) reads a run through
these functions, so "is this a run", "which config trained it" and "rebuild its model" are written
once. A run may start from another run's final model (`model.init_from`): the start model is built
here too (`load_start_model`), so every reload of a run starts where its training did. Errors
name the folder, never a CLI flag: the same message reads right from a sweep.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable
from pathlib import Path

import yaml

from arena.components import build_components
from arena.config import run_config_from_dict
from arena.errors import ArenaError, ConfigError
from arena.models.loader import load_model
from arena.records import read_record, write_record

CONFIG = "config.yaml"
FINAL = "final"
WEIGHTS = "trainable.safetensors"
LOCK = ".record.lock"

# Train fields that change nothing about the trained weights: a run folder holding a config that
# differs only in these is the same run (resume), and sweep run ids leave them out. cast_cache and
# fused_rope are bit-identical by construction (docs/training.md); fused_rmsnorm keeps every forward
# value and moves the norm's gradient only at fp32 rounding (1e-7 relative, far below bf16 noise);
# fused_ce keeps every per-token loss and rounds the head's gradient once, as the stock path does, in
# another order (arena/objectives/linear_ce.py); fused_lora keeps the dropout masks and moves bf16
# roundings of the adapter path only (arena/training/fused_lora.py);
# eval_every only logs probes; save_every and keep_checkpoints only decide what is kept on disk;
# activation_checkpointing recomputes the same values in backward (tests/test_distributed.py).
RESULT_NEUTRAL_TRAIN_KEYS = ("progress", "log_every", "save_every", "keep_checkpoints", "threads", "eval_every",
                             "cast_cache", "fused_rope", "fused_rmsnorm", "fused_ce", "fused_lora",
                             "activation_checkpointing")


def weights_path(run_dir: str | Path) -> Path:
    return Path(run_dir).expanduser() / FINAL / WEIGHTS


def has_config(run_dir: str | Path) -> bool:
    return (Path(run_dir).expanduser() / CONFIG).is_file()


def is_run_folder(run_dir: str | Path) -> bool:
    """A finished run: a config and final weights (what every later stage needs)."""
    return has_config(run_dir) and weights_path(run_dir).is_file()


def check_run_folder(run_dir: str | Path) -> Path:
    """The folder as a Path; ArenaError naming what is missing when it is not a finished run."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise ArenaError(f"run folder {run_dir}: no such folder")
    if not has_config(run_dir):
        raise ArenaError(f"run folder {run_dir}: not a run folder (no {CONFIG})")
    if not weights_path(run_dir).is_file():
        raise ArenaError(f"run folder {run_dir}: the run has no final weights ({FINAL}/{WEIGHTS}); did it finish?")
    return run_dir


def read_run_config(run_dir: str | Path):
    """The RunConfig that trained a finished run (checked before any model is loaded)."""
    run_dir = check_run_folder(run_dir)
    return run_config_from_dict(yaml.safe_load((run_dir / CONFIG).read_text()))


def check_init_from(cfg) -> list[Path]:
    """The chain of run folders cfg.model.init_from leads through (nearest first; [] without one).

    Every link must be a finished run trained from the same model.name (ConfigError naming
    model.init_from otherwise), and the chain must not loop. Reads configs only: cheap, and run
    before any weights load or anything is written.
    """
    chain: list[Path] = []
    link, name = cfg.model.init_from, cfg.model.name
    while link is not None:
        try:
            folder = check_run_folder(link).resolve()
        except ArenaError as e:
            raise ConfigError("model.init_from", link, f"must be a finished run folder ({e})") from None
        if folder in chain:
            raise ConfigError("model.init_from", link, f"the init_from chain loops back to {folder}")
        init_cfg = read_run_config(folder)
        if init_cfg.model.name != name:
            raise ConfigError("model.init_from", link,
                              f"was trained from model {init_cfg.model.name!r}, this run uses {name!r}")
        chain.append(folder)
        link = init_cfg.model.init_from
    return chain


def _start_model(cfg):
    """(model, tokenizer, ModelInfo) on the CPU: model.name, with model.init_from's merged final
    weights copied in when set (load_run_model recurses through a chain of init_from runs)."""
    chain = check_init_from(cfg)
    model, tok, info = load_model(cfg.model.name, cfg.model.revision, cfg.model.trust_remote_code)
    if chain:
        start, _, _ = load_run_model(chain[0], merged=True)
        try:
            model.load_state_dict(start.state_dict(), strict=True)
        except RuntimeError as e:  # same model name, different architecture: a changed local folder
            raise ConfigError("model.init_from", str(chain[0]),
                              f"its merged weights do not fit {cfg.model.name!r}: {str(e).splitlines()[0]}") from None
        del start
        info.extra["init_from"] = str(chain[0])
        if len(chain) > 1:
            info.extra["init_chain"] = [str(p) for p in chain]
    return model, tok, info


def load_start_model(cfg, device="cpu"):
    """(model, tokenizer): the unwrapped weights a run started from — model.name with
    model.init_from applied (the plain model without one); `arena ilp`'s "base"."""
    model, tok, _ = _start_model(cfg)
    return model.to(device), tok


def load_and_wrap(cfg, method, device):
    """Start model (model.name, or init_from's final weights) + tokenizer, wrapped by the method
    with a seeded init (reproducible adapters)."""
    import torch

    model, tok, info = _start_model(cfg)
    method.check_model(model)
    torch.manual_seed(cfg.train.seed)
    model = method.wrap(model, total_steps=cfg.train.steps)
    return model.to(device), tok, info


def load_run_model(run_dir: str | Path, merged: bool = True, device="cpu"):
    """Rebuild a finished run's model: base + the same seeded wrap + the saved trainable weights.

    Works the same for every method (PiSSA's residual base and VeRA's projections are recomputed
    deterministically). Returns (model, tokenizer, RunConfig); merged=True folds the update in.
    """
    import torch
    from safetensors.torch import load_file

    cfg = read_run_config(run_dir)
    method, _, _ = build_components(cfg, check_data=False)
    model, tok, _ = load_and_wrap(cfg, method, torch.device("cpu"))
    method.load_trainable_state_dict(model, load_file(str(weights_path(run_dir))))
    if merged:
        model = method.merge(model)
    return model.to(device), tok, cfg


def update_record(run_dir: str | Path, change: Callable[[dict], None]) -> Path:
    """Apply `change(record)` to the run's record.json in place, keeping every other key.

    Atomic (arena.records.write_record) and serialised with a lock file, so two stages updating
    the same record (analyze and interpolate, a sweep's stage marks) never drop each other's result.
    """
    run_dir = Path(run_dir)
    with open(run_dir / LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = read_record(run_dir)
        if record is None:
            raise ArenaError(f"run folder {run_dir}: no record.json to update (the run never finished)")
        change(record)
        return write_record(run_dir, record)


def set_record_key(run_dir: str | Path, key: str, value, subkey: str | None = None) -> Path:
    """record[key] = value, or record[key][subkey] = value (other subkeys kept)."""

    def change(record: dict) -> None:
        if subkey is None:
            record[key] = value
        else:
            old = record.get(key)
            record[key] = {**(old if isinstance(old, dict) else {}), subkey: value}

    return update_record(run_dir, change)
