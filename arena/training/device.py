"""Device and precision selection. Library code never calls .cuda(): it asks here."""

from __future__ import annotations

import contextlib

import torch

from arena.errors import ConfigError


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device", requested, "CUDA is not available on this machine; use auto or cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device", requested, "MPS is not available on this machine; use auto or cpu")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 autocast over fp32 master weights wherever bf16 matmuls are fast.

    Measured on the 2-core CPU (docs/design.md#precision): autocast is ~2x fp32 for LoRA and full FT, and pure
    bf16 full fine-tuning loses most AdamW updates at small LRs, so fp32 masters stay.
    """
    if precision != "auto":
        if precision in ("bf16", "bf16-autocast") and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("train.precision", precision, "this GPU has no bf16 support; use fp32")
        return precision
    if device.type == "cuda":
        return "bf16-autocast" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16-autocast"
    return "fp32"


def autocast(device: torch.device, precision: str):
    if precision == "bf16-autocast":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def peak_memory_mb(device: torch.device) -> float:
    """Peak accelerator memory allocated, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
