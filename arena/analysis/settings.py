"""What `analyze_run` and `interpolate_run` take: one typed settings object each.

`arena analyze` / `arena interpolate` build them from their flags and a sweep from its
`diagnostics:` / `interpolation:` sections (which add only what selects runs: enabled, methods,
seeds), so the command and the sweep stage cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional

from arena.errors import ConfigError, suggest
from arena.generation.names import check_engine_name

INTERP_PATHS = ("weights", "generator")
INTERP_SUITES = ("general", "target")
SCORER_NAMES = ("proxy", "lm-eval")


@dataclass
class DiagnosticsSettings:
    """CSD, geometry and spectra of one run (arena.analysis.diagnostics)."""

    modules: Optional[list[str]] = None  # default: layers ~n/3 and ~2n/3 x q,k,v,down_proj
    max_prompts: int = 300  # prompts per distribution
    max_tokens: int = 4096  # tokens per distribution
    max_length: int = 1024  # tokens per prompt
    shared_prefix: Literal["keep", "once"] = "keep"  # the prompts' common token prefix: every prompt, or once
    # raw: the prompt text's own tokens (PEFT-Arena's); chat: inside the chat template, whose system
    # header is the same ~24 tokens in every prompt (arena/analysis/capture.py)
    prompt_format: Literal["raw", "chat"] = "raw"
    precision: Literal["bf16-autocast", "fp32"] = "bf16-autocast"  # capture forwards (metrics are float64)
    data_dir: Optional[str] = None  # general prompts' data folder (None: the run's)
    use_cache: bool = True  # read/write the base activations in the capture cache

    def __post_init__(self):
        for name in ("max_prompts", "max_tokens", "max_length"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"diagnostics.{name}", getattr(self, name), "must be a positive integer")


@dataclass
class InterpolationSettings:
    """The base -> tuned curve θ(α) of one run (arena.analysis.interpolation)."""

    alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])  # 0 and 1 always added
    suites: list[str] = field(default_factory=lambda: ["general", "target"])
    limit: int = 50  # examples per axis
    path: Literal["weights", "generator"] = "weights"
    scorer: Literal["proxy", "lm-eval"] = "proxy"  # proxy: NLL proxies (cheap); lm-eval: benchmark accuracies
    delta: Optional[float] = None  # rule (a) tolerance on the general score (None: the scorer's default)
    precision: Optional[Literal["fp32", "bf16-autocast"]] = None  # None: the run's train.precision
    data_dir: Optional[str] = None  # general prompts' data folder (None: the run's)
    engine: str = "auto"  # who generates the scorer's texts (arena/generation/engine.py)

    def __post_init__(self):
        check_engine_name(self.engine, "interpolation.engine")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit <= 0:
            raise ConfigError("interpolation.limit", self.limit, "must be a positive integer")
        if not self.alphas:
            raise ConfigError("interpolation.alphas", self.alphas, "give at least one alpha, e.g. [0, 0.5, 1]")
        for a in self.alphas:
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
                raise ConfigError("interpolation.alphas", a, "expected finite numbers such as [0, 0.25, 0.5, 0.75, 1]")
        for s in self.suites:
            if s not in INTERP_SUITES:
                raise ConfigError("interpolation.suites", s, f"allowed: {', '.join(INTERP_SUITES)}"
                                                             f"{suggest(str(s), INTERP_SUITES)}")
        if not self.suites:
            raise ConfigError("interpolation.suites", self.suites, f"give at least one of: {', '.join(INTERP_SUITES)}")
        self.alphas = sorted({float(a) for a in self.alphas} | {0.0, 1.0})

