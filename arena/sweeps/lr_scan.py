"""The sweep's learning-rate axis (`lr_scan:`): which runs it adds and how they are labelled.

Its results view is arena/results/lr_scan.py (each method's best trade-off over lr).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from arena.errors import ConfigError


@dataclass
class LrScanSpec:
    """The sweep's `lr_scan:` section: a learning-rate axis around each method's own lr.

    Every selected method also trains at lr x factor for each factor (its own lr, factor 1, is the
    main run and is not repeated). A scan run's label is `<label>-lrx<factor>` (lora-lrx4) and its
    record says `sweep.lr_factor` and `sweep.lr_of` (the main run's label), so the leaderboard keeps
    each lr apart and the report's "best trade-off over lr" view puts them back together. Scan runs
    get the sweep's stages except interpolation (a path per lr costs as much as the run itself)
    unless `interpolate` says so.
    """

    factors: list[float] = field(default_factory=list)  # e.g. [0.25, 4]; empty: no scan
    methods: Optional[list[str]] = None  # labels (or method names) to scan; null: every method
    seeds: Optional[list[int]] = None  # seeds to scan; null: every seed
    interpolate: bool = False  # scan runs get the interpolation stage too

    def __post_init__(self):
        for i, f in enumerate(self.factors):
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not f > 0:
                raise ConfigError(f"lr_scan.factors[{i}]", f, "must be a number > 0 (a multiple of the method's lr)")
            if f == 1:
                raise ConfigError(f"lr_scan.factors[{i}]", f, "1 is the method's own lr, run anyway: list the other factors")
        if len(set(self.factors)) != len(self.factors):
            raise ConfigError("lr_scan.factors", self.factors, "must not repeat a factor")

    def selects(self, label: str, method: str, seed: int) -> bool:
        return bool(self.factors) and (not self.methods or label in self.methods or method in self.methods) \
            and (self.seeds is None or seed in self.seeds)


def lr_scan_label(label: str, factor: float) -> str:
    """lora, 4 -> lora-lrx4; lora, 0.25 -> lora-lrx0.25 (a label, so letters, digits, '.', '-')."""
    return f"{label}-lrx{factor:g}"
