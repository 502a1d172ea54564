"""The prompt distributions of the diagnostics (docs/design.md "Diagnostics").

- "general": IFEval prompts and NQ-open questions **disjoint from the general NLL proxy's**: the
  proxy (and the step probe and interpolation scorer built on it) takes the head of each source's
  seeded order (`arena.evaluation.proxies.general_orders`), the diagnostics its tail, so drift and
  forgetting are not measured on the same text (they were: the diagnostic set contained the
  proxy's). Interleaved IFEval, NQ, IFEval, … so that any prefix — the token cap of a capture keeps
  a prefix — holds both sources.
- "target": the run's target held-out prompts, `Target.heldout_examples(n, probe.seed)`. The probe
  seed is fixed across a sweep, so every run of a sweep sees the same prompts and the base side of
  the diagnostics is computed once.
"""

from __future__ import annotations

import hashlib
import json

from arena.errors import ArenaError
from arena.evaluation.proxies import ProxySettings, general_orders
from arena.evaluation.proxies import general_prompts as proxy_prompts


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def general_prompts(data_dir: str | None, n_per_source: int, seed: int = 1234) -> list[str]:
    """`n_per_source` IFEval prompts and as many NQ-open questions (the tails of the seeded orders,
    last first), interleaved."""
    if n_per_source <= 0:
        raise ArenaError(f"general prompts: n_per_source must be positive; got {n_per_source}")
    orders = general_orders(data_dir, seed, needed_by="the diagnostics' general prompts")
    ife, nq = orders["ifeval"][::-1][:n_per_source], orders["nq_open"][::-1][:n_per_source]
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


def proxy_overlap(prompts: list[str], data_dir: str | None, seed: int) -> int:
    """How many of `prompts` the general NLL proxy at its default size and this seed also scores
    (0 unless the diagnostics take more than the pool's tail leaves: reported in the record)."""
    ps = ProxySettings(seed=seed)
    return len(set(prompts) & {p for _, p in proxy_prompts(data_dir, ps)})
