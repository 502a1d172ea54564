"""Which Linear modules the diagnostics look at: the default choice and names/globs/regexes from settings."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

import torch

from arena.errors import ArenaError, ConfigError

DEFAULT_LEAVES = ("q_proj", "k_proj", "v_proj", "down_proj")
_LAYER = re.compile(r"^(.*\.layers)\.(\d+)\.(.+)$")


def linear_module_names(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def compact_names(names: list[str]) -> str:
    """'model.layers.{0-29}.self_attn.q_proj, …' when a listing would run to hundreds of names."""
    if len(names) <= 40:
        return ", ".join(names)
    groups: dict[str, list[int]] = {}
    rest = []
    for n in names:
        m = _LAYER.match(n)
        if m:
            groups.setdefault(f"{m.group(1)}.{{}}.{m.group(3)}", []).append(int(m.group(2)))
        else:
            rest.append(n)
    parts = [g.format(f"{{{min(ix)}-{max(ix)}}}") for g, ix in groups.items()]
    return ", ".join(parts + rest)


def decoder_depth(model: torch.nn.Module) -> tuple[str, int]:
    """(prefix of the decoder-layer ModuleList, number of layers), e.g. ('model.layers', 30)."""
    found: dict[str, set[int]] = {}
    for n in linear_module_names(model):
        m = _LAYER.match(n)
        if m:
            found.setdefault(m.group(1), set()).add(int(m.group(2)))
    if not found:
        raise ConfigError("diagnostics.modules", None, "could not find decoder layers (no Linear module named "
                                                       "'<...>.layers.<i>.<...>'); name the modules explicitly")
    prefix = max(found, key=lambda p: len(found[p]))
    return prefix, max(found[prefix]) + 1


def default_modules(model: torch.nn.Module, leaves: Sequence[str] = DEFAULT_LEAVES) -> list[str]:
    """Decoder layers round(n/3) and round(2n/3) × {q,k,v,down}_proj (SmolLM2's 30 layers: 10, 20).

    A 2-layer model gives layer 1 once (the two depths coincide)."""
    prefix, n = decoder_depth(model)
    layers = sorted({min(n - 1, round(n / 3)), min(n - 1, round(2 * n / 3))})
    names = set(linear_module_names(model))
    out = []
    for i in layers:
        for leaf in leaves:
            hits = sorted(x for x in names if x.startswith(f"{prefix}.{i}.") and x.rsplit(".", 1)[-1] == leaf)
            out += hits
    if not out:
        raise ArenaError(f"no {'/'.join(leaves)} modules in layers {layers}; available Linear modules: "
                         f"{compact_names(linear_module_names(model))}")
    return out


def resolve_modules(model: torch.nn.Module, spec: Sequence[str] | str | None = None) -> list[str]:
    """Module names from a spec: None -> `default_modules`; otherwise names or patterns, comma-separated
    or a list. Each item is an exact Linear module name, a suffix of one ('layers.10.mlp.down_proj'),
    a glob ('*.layers.1?.self_attn.q_proj') or a regex written 're:<pattern>'. Anything that matches no
    Linear module raises ArenaError listing the available names."""
    if spec is None or spec == [] or spec == "":
        return default_modules(model)
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) for s in s.split(",")]
    items = [s for s in items if s]
    names = linear_module_names(model)
    out: list[str] = []
    for item in items:
        if item.startswith("re:"):
            rx = re.compile(item[3:])
            hits = [n for n in names if rx.search(n)]
        elif any(c in item for c in "*?["):
            hits = [n for n in names if fnmatch.fnmatchcase(n, item)]
        elif item in names:
            hits = [item]
        else:
            hits = [n for n in names if n.endswith("." + item)]
        if not hits:
            raise ArenaError(f"module {item!r} matches no Linear module of this model; available: {compact_names(names)}")
        out += [h for h in hits if h not in out]
    return out
