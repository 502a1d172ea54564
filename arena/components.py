"""The three component registries (methods, targets, objectives), imported lazily.

Kept apart from `config.py` so that loading a config imports only the registries it needs and
so that a new component is one module that registers itself, nothing else.
"""

from __future__ import annotations

from arena.errors import ConfigError
from arena.registry import Registry


def registry_for(kind: str) -> Registry:
    if kind == "method":
        from arena.methods import METHODS

        return METHODS
    if kind == "target":
        from arena.targets import TARGETS

        return TARGETS
    if kind == "objective":
        from arena.objectives import OBJECTIVES

        return OBJECTIVES
    raise ConfigError("component", kind, "allowed: method, target, objective")
