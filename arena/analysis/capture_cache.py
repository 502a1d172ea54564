"""The disk cache of base-model captures: the base side of the diagnostics is the same for every run of a sweep.

`cached_capture` stores it as safetensors under `cache_root()/activations/`, keyed by the model
identity (name + source sha), the exact token ids (which covers prompt set, tokenizer, chat template
and caps), the module list, precision, device type (bf16 kernels differ between CPU and CUDA) and
torch version. The full key is kept in the file's
metadata and checked on load.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from arena.analysis.capture import (
    Caps,
    Capture,
    Encoded,
    capture_activations,
    capture_token_ids,
    check_finite,
    tokenizer_pad_id,
)
from arena.analysis.prompts import sha256_json
from arena.models.catalog import cache_root

CAPTURE_VERSION = 1


def capture_key(model_key: dict, enc: Encoded, modules: Sequence[str], caps: Caps, precision: str,
                device_type: str = "cpu") -> dict:
    return {"version": CAPTURE_VERSION, "model": model_key, "tokens_sha256": sha256_json([enc.ids, enc.skip]),
            "n_prompts": len(enc.ids), "n_tokens": sum(enc.kept), "modules": list(modules), "caps": caps.to_dict(),
            "precision": precision, "device": device_type, "torch": torch.__version__}


def cache_path(key: dict, cache_dir: Path | None = None) -> Path:
    folder = Path(cache_dir) if cache_dir else cache_root() / "activations"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(key["model"].get("name", "model")))[-48:]
    return folder / f"{slug}-{sha256_json(key)[:24]}.safetensors"


def save_capture(cap: Capture, path: Path, key: dict) -> None:
    from safetensors.torch import save_file

    tensors = {"lengths": torch.tensor(cap.lengths, dtype=torch.int64)}
    for m in cap.modules:
        if m in cap.inputs and m not in cap.input_alias:
            tensors[f"in/{m}"] = cap.inputs[m].contiguous()
        if m in cap.outputs:
            tensors[f"out/{m}"] = cap.outputs[m].contiguous()
    meta = {"arena_capture": json.dumps({"key": key, "modules": cap.modules, "input_alias": cap.input_alias})}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache must be readable by its other users
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_capture(path: Path, key: dict) -> Capture | None:
    """The cached capture, or None when absent, unreadable or stored under another key."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("arena_capture", "{}"))
            if meta.get("key") != key:
                return None
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (OSError, ValueError, RuntimeError, json.JSONDecodeError):
        return None
    modules, alias = meta["modules"], meta.get("input_alias", {})
    cap = Capture(modules=modules, lengths=[int(x) for x in tensors["lengths"]], input_alias=alias, cached=True, key=key)
    cap.inputs = {m: tensors[f"in/{alias.get(m, m)}"] for m in modules if f"in/{alias.get(m, m)}" in tensors}
    cap.outputs = {m: tensors[f"out/{m}"] for m in modules if f"out/{m}" in tensors}
    return cap


def cached_capture(model, tokenizer, prompts: Sequence[str], modules: Sequence[str], model_key: dict, *,
                   caps: Caps | None = None, precision: str = "bf16-autocast", device=None, use_cache: bool = True,
                   cache_dir: Path | None = None) -> Capture:
    """Base-model capture (inputs and outputs) through the disk cache; computed and stored on a miss."""
    t0 = time.perf_counter()
    caps = caps or Caps()
    enc = capture_token_ids(tokenizer, prompts, caps)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    key = capture_key(model_key, enc, modules, caps, precision, dev.type)
    path = cache_path(key, cache_dir)
    if use_cache and path.is_file():
        cap = load_capture(path, key)
        if cap is not None:
            cap.seconds = time.perf_counter() - t0
            return cap
    cap = capture_activations(model, enc, modules, pad_id=tokenizer_pad_id(tokenizer), device=device,
                              precision=precision)
    check_finite(cap, "base model")
    cap.key = key
    if use_cache:
        save_capture(cap, path, key)
    cap.seconds = time.perf_counter() - t0
    return cap
