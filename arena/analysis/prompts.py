"""The prompt distributions of the diagnostics (docs/design.md "Diagnostics").

- "general": IFEval prompts and NQ-open questions, the same seeded selection as the evaluation
  layer's general NLL proxy (`arena.evaluation.proxies.general_prompts`), but interleaved
  IFEval, NQ, IFEval, … so that any prefix — the token cap of a capture keeps a prefix — holds
  both sources (the proxy lists all IFEval prompts first).
- "target": the run's target held-out prompts, `Target.heldout_examples(n, probe.seed)`. The probe
  seed is fixed across a sweep, so every run of a sweep sees the same prompts and the base side of
  the diagnostics is computed once.
"""

from __future__ import annotations

import hashlib
import json

from arena.errors import ArenaError
from arena.evaluation.proxies import ProxySettings
from arena.evaluation.proxies import general_prompts as proxy_prompts


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def general_prompts(data_dir: str | None, n_per_source: int, seed: int = 1234) -> list[str]:
    """`n_per_source` IFEval prompts and as many NQ-open questions (seeded), interleaved."""
    if n_per_source <= 0:
        raise ArenaError(f"general prompts: n_per_source must be positive; got {n_per_source}")
    items = proxy_prompts(data_dir, ProxySettings(n_ifeval=n_per_source, n_nq=n_per_source, seed=seed))
    ife = [p for src, p in items if src == "ifeval"]
    nq = [p for src, p in items if src != "ifeval"]
    out: list[str] = []
    for i in range(max(len(ife), len(nq))):
        out += ife[i : i + 1] + nq[i : i + 1]
    return out


def target_prompts(target, n: int, seed: int) -> list[str]:
    """Prompts of `n` held-out examples of the run's target."""
    ex = target.heldout_examples(n, seed)
    if not ex:
        raise ArenaError(f"target {target.name!r} returned no held-out examples")
    return [e.prompt for e in ex]
