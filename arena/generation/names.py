"""The engine names, torch-free, so settings can validate `engine` fields without importing torch.
tests/test_generation_engine.py checks that this list equals the registered engines plus `auto`."""

from __future__ import annotations

from arena.errors import ConfigError, suggest

ENGINE_NAMES = ("auto", "hf", "generate", "native", "vllm")


def check_engine_name(name: str, field: str) -> None:
    if name not in ENGINE_NAMES:
        raise ConfigError(field, name, f"allowed: {', '.join(ENGINE_NAMES)}{suggest(str(name), ENGINE_NAMES)}")
