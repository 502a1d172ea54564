"""The three component registries (methods, targets, objectives) and building a run's components.

The registries live here, apart from the component packages, so that the config layer can look a
component up without importing any of them: each registry imports its package's modules on the
first lookup (`Registry.discover`), and each module registers its class into the registry. The
dependency points from the components to this module, never back, and `import arena.config`
stays light (no torch until a component is looked up).
"""

from __future__ import annotations

from arena.errors import ConfigError
from arena.registry import Registry

METHODS: Registry = Registry("method", package="arena.methods")
TARGETS: Registry = Registry("target", package="arena.targets")
OBJECTIVES: Registry = Registry("objective", package="arena.objectives")

REGISTRIES = {"method": METHODS, "target": TARGETS, "objective": OBJECTIVES}


def registry_for(kind: str) -> Registry:
    if kind not in REGISTRIES:
        raise ConfigError("component", kind, f"allowed: {', '.join(REGISTRIES)}")
    return REGISTRIES[kind]


def build_components(cfg, check_data: bool = True):
    """Instantiate (method, target, objective); check the data files (cheap, before any write)."""
    method = METHODS.get(cfg.method.name)(cfg.method.options)
    target = TARGETS.get(cfg.target.name)(cfg.target.options, cfg.data_dir)
    objective = OBJECTIVES.get(cfg.objective.name)(cfg.objective.options)
    if check_data:
        target.check_data()
    return method, target, objective
