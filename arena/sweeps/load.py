"""A sweep YAML (+ `--set` overrides) -> a validated SweepConfig, every run it expands to checked.

The YAML's shorthands are put in their one typed form first (`model:` for `models:`, a lone entry
for a list of one, a method name for a mapping), then `arena.schema.build` checks every field;
expanding once validates every run as a `RunConfig` and the uniqueness of the ids, so a typo in
the fifth method fails at load, with the field named.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional

from arena.config import load_yaml
from arena.errors import ConfigError
from arena.schema import apply_overrides, build
from arena.sweeps.expand import expand
from arena.sweeps.spec import MethodEntry, SweepConfig

LISTS = ("models", "targets", "objectives", "seeds")


def _normalize(data: dict, source: Optional[str]) -> dict:
    data = {k: v for k, v in data.items() if v is not None}  # an empty YAML section means its defaults
    for single, plural in (("model", "models"), ("target", "targets"), ("objective", "objectives")):
        if single in data:
            if plural in data:
                raise ConfigError(single, data[single], f"give either {single!r} or {plural!r}, not both")
            data[plural] = data.pop(single)
    for key in LISTS:
        if isinstance(data.get(key), (str, dict, int)) and not isinstance(data.get(key), bool):
            data[key] = [data[key]]
    if "name" not in data and source:
        data["name"] = Path(source).stem
    if "name" not in data:
        raise ConfigError("name", None, "a sweep needs a name (it names the results folder)")
    if "methods" in data:
        if not isinstance(data["methods"], list):
            raise ConfigError("methods", data["methods"], "give a non-empty list of methods, e.g. [lora, {name: oft, block_size: 32}]")
        data["methods"] = [MethodEntry.parse(m, i) for i, m in enumerate(data["methods"])]
    return data


def sweep_config_from_dict(data: dict, source: Optional[str] = None) -> SweepConfig:
    """Validate a sweep mapping (YAML + overrides) into a SweepConfig, then every run it expands to."""
    cfg = build(SweepConfig, _normalize(copy.deepcopy(dict(data or {})), source))
    cfg.source = source
    expand(cfg)
    return cfg


def load_sweep_config(path: str, overrides: Optional[list[str]] = None) -> SweepConfig:
    data = load_yaml(path)
    apply_overrides(data, overrides or [])
    return sweep_config_from_dict(data, source=str(path))
