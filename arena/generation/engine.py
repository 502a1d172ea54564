"""One generation interface for everything that generates: lm-eval's generate_until requests,
rollouts, the NLL proxies' reference responses, the held-out probes and interpolation scoring.

An engine is built from the in-memory model (`build_engine(name, model, tokenizer, ...)`) and
answers `generate(requests, sampling, seed) -> completions`, one per request in order. Engines:

- `hf`: the reference — a batched sampling loop over the transformers forward with a KV cache
  (`hf.py`);
- `generate`: plain `model.generate` (the peer every benchmark compares with);
- `native`: the CPU fast path — arena's own Llama-family decoder with continuous batching
  (`native.py`, `scheduler.py`);
- `vllm`: vLLM on CUDA machines, the optional extra `arena[vllm]` (`vllm_engine.py`).

`auto` picks vLLM where it is installed and CUDA is present, the native engine where it supports
the model, and `hf` otherwise. The model's weights are read when the engine is built: after an
optimizer step, build a new engine (the native build reads ~0.1 s of weights for a 135M model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from arena.errors import ConfigError
from arena.generation.names import check_engine_name
from arena.generation.requests import Completion, GenRequest, Sampling
from arena.registry import Registry


class Engine(Protocol):
    name: str

    def generate(self, requests: list[GenRequest], sampling: Sampling, seed: int) -> list[Completion]: ...


@dataclass
class EngineOptions:
    """Knobs an engine may use; each ignores what it has no use for."""

    max_batch: int = 64  # hf/generate: sequences per forward; native: the cap on KV slots is max_slots
    max_slots: int = 256
    cache_mb: int = 2048
    gpu_memory_utilization: float = 0.3  # vllm, when it shares the GPU with training
    prepack: bool = True  # native: oneDNN-prepacked bf16 weights where they reproduce F.linear (native.py)


EngineFactory = Callable[..., Engine]
ENGINES: Registry[EngineFactory] = Registry("generation engine", package="arena.generation.backends")


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """EOS of the tokenizer plus the model's generation-config EOS ids (chat models often differ)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gc = getattr(model, "generation_config", None)
    eos = getattr(gc, "eos_token_id", None)
    for e in (eos if isinstance(eos, (list, tuple)) else [eos]):
        if e is not None:
            ids.add(int(e))
    if not ids:
        raise ValueError("the tokenizer has no EOS token; generation needs one to stop")
    return sorted(ids)


def vllm_available() -> bool:
    """CUDA present and the `vllm` package importable (without importing it: it is slow)."""
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


VLLM_INSTALL = "pip install 'arena[vllm]' on a CUDA machine (docs/generation.md)"


def check_available(name: str, model, device: torch.device, field: str) -> str:
    """The engine `name` resolves to, or a ConfigError saying why it cannot run here (before any
    weights load or anything is written)."""
    check_engine_name(name, field)
    device = torch.device(device)
    resolved = resolve_engine(name, model, device)
    if resolved == "vllm":
        import importlib.util

        if not torch.cuda.is_available() or device.type != "cuda":
            raise ConfigError(field, "vllm", f"vLLM needs a CUDA GPU and this run is on {device.type}"
                              f"{'' if torch.cuda.is_available() else ' (no CUDA device here)'}; use auto, native or hf")
        if importlib.util.find_spec("vllm") is None:
            raise ConfigError(field, "vllm", f"vLLM is not installed: {VLLM_INSTALL}")
    if resolved == "native":
        from arena.generation.native import UnsupportedModel, check_supported

        try:
            check_supported(model)
        except UnsupportedModel as e:
            raise ConfigError(field, "native", f"unsupported here: {e}; use hf or auto") from None
    return resolved


def resolve_engine(name: str, model, device: torch.device) -> str:
    """`auto` -> vllm (CUDA + vllm installed), native (model supported), else hf."""
    if name != "auto":
        return name
    device = torch.device(device)
    if device.type == "cuda":
        return "vllm" if vllm_available() else "hf"
    if device.type == "cpu":
        from arena.generation.native import UnsupportedModel, check_supported

        try:
            check_supported(model)
            return "native"
        except UnsupportedModel:
            return "hf"
    return "hf"


def build_engine(name: str, model, tokenizer, device: torch.device | str = "cpu", precision: str = "fp32",
                 options: EngineOptions | None = None, field: str = "engine") -> Engine:
    """The engine `name` (or `auto`) over the model's current weights."""
    device = torch.device(device)
    resolved = check_available(name, model, device, field)
    factory = ENGINES.get(resolved, field=field)
    return factory(model, tokenizer, device=device, precision=precision, options=options or EngineOptions(), field=field)
