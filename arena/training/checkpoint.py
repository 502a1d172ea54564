"""Checkpoints in safetensors + JSON only (no pickle): trainable weights, optimizer, RNG, step.

A checkpoint folder is written under a temporary name and renamed into place, so a run killed
mid-write leaves either the previous checkpoint or the new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CKPT_RE = re.compile(r"^step-(\d+)$")
OBJECTIVE_TENSORS = "objective.safetensors"  # Objective.tensor_state(), when it has any


def load_objective_tensors(path: Path) -> dict[str, torch.Tensor]:
    f = path / OBJECTIVE_TENSORS
    return load_file(str(f)) if f.is_file() else {}


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"state.{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        _, idx, k = key.split(".", 2)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(folder: Path, step: int, trainable: dict, opt, extra: dict, keep: int = 2,
                    objective_tensors: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:06d}"
    tmp = folder / f".tmp-step-{step:06d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(trainable, str(tmp / "trainable.safetensors"))
    if objective_tensors:
        save_file({k: v.detach().cpu().contiguous() for k, v in objective_tensors.items()},
                  str(tmp / OBJECTIVE_TENSORS))
    opt_tensors, opt_meta = optimizer_to_flat(opt)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file({**opt_tensors, **{f"rng.{k}": v for k, v in rng.items()}}, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, "optimizer": opt_meta, **extra}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CKPT_RE.match(p.name)) and (p / "state.json").is_file()]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: Path, opt) -> tuple[dict, dict]:
    """Restore optimizer and RNG in place; return (trainable tensors, state.json)."""
    state = json.loads((path / "state.json").read_text())
    trainable = load_file(str(path / "trainable.safetensors"))
    flat = load_file(str(path / "optimizer.safetensors"))
    rng = {k[4:]: v for k, v in flat.items() if k.startswith("rng.")}
    optimizer_from_flat(opt, {k: v for k, v in flat.items() if k.startswith("state.")}, state["optimizer"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return trainable, state
