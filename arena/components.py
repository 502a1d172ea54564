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


def build_components(cfg, check_data: bool = True):
    """Instantiate (method, target, objective); check the data files (cheap, before any write)."""
    method = registry_for("method").get(cfg.method.name)(cfg.method.options)
    target = registry_for("target").get(cfg.target.name)(cfg.target.options, cfg.data_dir)
    objective = registry_for("objective").get(cfg.objective.name)(cfg.objective.options)
    if check_data:
        target.check_data()
    return method, target, objective
