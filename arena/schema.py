"""Build typed dataclasses from plain dicts (YAML, `--set` overrides) with field-level errors.

Every config in arena is a dataclass; this module is the only place that turns untyped input into
them. Errors name the dotted field, the bad value and what is allowed, and unknown keys get a
"did you mean" suggestion, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Mapping, Union, get_args, get_origin, get_type_hints

import yaml

from arena.errors import ConfigError, suggest


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _same_shape(value: Any, tp: Any) -> bool:
    origin = get_origin(tp) or tp
    if isinstance(value, Mapping):
        return origin is dict or dataclasses.is_dataclass(tp)
    if isinstance(value, (list, tuple)):
        return origin in (list, tuple)
    return False


def coerce(value: Any, tp: Any, field: str) -> Any:
    """Convert `value` to annotation `tp` or raise ConfigError naming `field`."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = get_args(tp)
        if value in allowed and type(value) is type(next(a for a in allowed if a == value)):
            return value
        # YAML 1.1 reads a bare on/off/yes/no as a bool: map it back to the word the field allows
        if isinstance(value, bool):
            for word in (("on", "yes", "true") if value else ("off", "no", "false")):
                if word in allowed:
                    return word
        raise ConfigError(field, value, f"allowed: {', '.join(map(str, allowed))}{suggest(str(value), map(str, allowed))}")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, field)
            except ConfigError as e:
                errors.append((a, e))
        # a mapping (or list) that failed inside the one mapping (list) alternative: that error says more
        shaped = [e for a, e in errors if _same_shape(value, a)]
        if len(shaped) == 1:
            raise shaped[0]
        raise ConfigError(field, value, f"expected {_type_name(tp)}")
    if origin in (list, tuple):
        (inner,) = get_args(tp)[:1] or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(field, value, f"expected a list of {_type_name(inner)}")
        out = [coerce(v, inner, f"{field}[{i}]") for i, v in enumerate(value)]
        return out if origin is list else tuple(out)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(field, value, "expected a mapping")
        if origin is None:
            return dict(value)
        key_t, value_t = get_args(tp)
        return {coerce(k, key_t, field): coerce(v, value_t, f"{field}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(field, value, f"expected a mapping of {tp.__name__} fields")
        return build(tp, value, prefix=field)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(field, value, "expected true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(field, value, "expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    f = None
                if f is not None and f.is_integer():
                    return int(f)
        raise ConfigError(field, value, "expected an integer")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(field, value, "expected a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # PyYAML reads "1e-4" as a string (YAML 1.1)
            except ValueError:
                pass
        raise ConfigError(field, value, "expected a number")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(field, value, "expected a string")
    return value


def build(cls: type, data: Mapping[str, Any] | None, prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from `data`, coercing and validating every field.

    `__post_init__` of the dataclass runs last and may raise ConfigError for cross-field rules.
    """
    data = dict(data or {})
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            raise ConfigError(name, value, f"unknown field; known: {', '.join(fields)}{suggest(key, fields)}")
        kwargs[key] = coerce(value, hints[key], name)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if prefix and not e.field.startswith(prefix):
            raise ConfigError(f"{prefix}.{e.field}", e.value, e.allowed) from None
        raise


def added_field(default: Any) -> Any:
    """A dataclass field for an option added after runs exist: `to_dict` leaves it out while it
    holds its default, so configs written before it existed, their run ids (the hash of the
    resolved config) and their run folders' config.yaml stay exactly as they were."""
    return dataclasses.field(default=default, metadata={"omit_default": True})


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain JSON/YAML-serialisable structure (`added_field`s at their default left out)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.metadata.get("omit_default") and getattr(obj, f.name) == f.default)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=1e-4' -> (['train', 'lr'], 1e-4); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError("override", text, "expected KEY=VALUE, e.g. train.lr=1e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError("override", text, "expected a dotted key such as train.lr")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: typing.Iterable[str]) -> dict:
    """Apply `--set a.b=c` overrides to a nested dict (in place) and return it."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for p in path[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            elif isinstance(child, str):  # `method: lora` shorthand becomes {name: lora}
                child = node[p] = {"name": child}
            elif not isinstance(child, dict):
                raise ConfigError(".".join(path), value, f"{p} is not a section")
            node = child
        node[path[-1]] = value
    return data
