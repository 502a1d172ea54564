"""θ(α) between a base and a tuned model, written into one model in place.

Paths:
- "weights" (every method): θ(α) = θ0 + α·ΔW for every parameter, with ΔW = merged tuned − base
  (merged in fp32, so non-additive methods — OFT, BOFT, DoRA, VeRA, IA3 — are covered as well).
- "generator": the method's own generator is scaled by α (`Method.generators`; OFT and BOFT scale
  their Cayley generators, see arena/methods/oft.py and boft.py). Parameters the method does not
  list follow the weights path.
α = 0 gives the base model's parameters bit for bit and α = 1 the merged tuned model's (to fp32 round-off).

`Interpolator` holds one model (modified in place), the base values of the parameters that change
and one delta (or the method's generator functions); moving to another α rewrites only those parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch

from arena.analysis.settings import INTERP_PATHS
from arena.components import build_components
from arena.errors import ArenaError, ConfigError
from arena.models.loader import load_model
from arena.runs import load_run_model, read_run_config


class Interpolator:
    """Writes θ(α) into `model` in place. `base`/`delta` cover only the parameters that differ;
    `generators` maps a parameter name to a function α -> its weight (generator path)."""

    def __init__(self, model: torch.nn.Module, base: dict[str, torch.Tensor], delta: dict[str, torch.Tensor],
                 generators: dict[str, Callable[[float], torch.Tensor]] | None = None, path: str = "weights"):
        self.model, self.path = model, path
        self.generators = generators or {}
        self.params = dict(model.named_parameters())
        unknown = [n for n in [*delta, *self.generators] if n not in self.params or n not in base]
        if unknown:
            raise ArenaError(f"interpolation: parameters {unknown[:3]} are missing from the model or the base state")
        self.base = {n: base[n].to(self.params[n].device) for n in delta}
        self.delta = {n: d.to(self.params[n].device) for n, d in delta.items()}
        self.alpha = 0.0
        self.apply(0.0)

    @torch.no_grad()
    def apply(self, alpha: float) -> torch.nn.Module:
        alpha = float(alpha)
        for n, d in self.delta.items():
            p = self.params[n]
            torch.add(self.base[n], d, alpha=alpha, out=p.data)  # θ0 + α·Δ, no temporary
        for n, g in self.generators.items():
            self.params[n].data.copy_(g(alpha))
        self.alpha = alpha
        return self.model

    @contextlib.contextmanager
    def at(self, alpha: float):
        """`with interp.at(0.5) as model: ...` — θ(0.5) inside, the previous α restored after."""
        prev = self.alpha
        self.apply(alpha)
        try:
            yield self.model
        finally:
            self.apply(prev)

    def changed_parameters(self) -> int:
        return sum(self.params[n].numel() for n in [*self.delta, *self.generators])


def dense_delta(base_model: torch.nn.Module, tuned_model: torch.nn.Module) -> tuple[dict, dict]:
    """(base values, tuned − base) in fp32 for every parameter that differs (names as in base_model)."""
    tuned = dict(tuned_model.named_parameters())
    base_vals, delta = {}, {}
    for n, p in base_model.named_parameters():
        if n not in tuned:
            raise ArenaError(f"interpolation: tuned model has no parameter {n!r}; base and tuned architectures differ")
        t = tuned[n].detach().to(p.device, torch.float32)
        if t.shape != p.shape:
            raise ArenaError(f"interpolation: {n} has shape {tuple(p.shape)} in the base and {tuple(t.shape)} tuned")
        if torch.equal(t, p.detach().float()):
            continue
        base_vals[n] = p.detach().float().clone()
        delta[n] = t - base_vals[n]
    return base_vals, delta


def load_interpolator(run_dir, path: str = "weights", device="cpu"):
    """(Interpolator over a fresh base model, tokenizer, RunConfig, ModelInfo) for a finished run."""
    if path not in INTERP_PATHS:
        raise ConfigError("interpolation.path", path, f"allowed: {', '.join(INTERP_PATHS)}")
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    base, tok, info = load_model(cfg.model.name, cfg.model.revision, cfg.model.trust_remote_code)
    base.eval()
    method, _, _ = build_components(cfg, check_data=False)
    wrapped, _, _ = load_run_model(run_dir, merged=False)
    # Taken before the merge, which removes the adapter layers from the model tree.
    makers = method.generators(wrapped) if path == "generator" else {}
    if path == "generator" and not makers:
        raise ConfigError("interpolation.path", path, f"this {cfg.method.name!r} run has no adapter layer with a "
                                                      "generator to scale: use weights")
    merged = method.merge(wrapped)
    base_vals, delta = dense_delta(base, merged)
    del merged, wrapped
    # A weight missing from base_vals did not move (adapter still at its identity init): it stays put.
    gens = {n: make(base_vals[n]) for n, make in makers.items() if n in base_vals}
    for n in gens:
        delta.pop(n)
    interp = Interpolator(base.to(device), base_vals, delta, gens, path=path)
    return interp, tok, cfg, info
