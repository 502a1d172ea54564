"""`IlpSettings`: what `arena ilp` and the sweep's `ilp:` section accept (one dataclass for both)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from arena.errors import ConfigError, suggest

CAUSES = ("I", "II", "III", "IV", "V")
CONTROLS = ("longer", "reversed")
CAUSE_NAMES = {
    "I": "missing pre-training knowledge",
    "II": "conflict with the base model's knowledge",
    "III": "conflict inside the SFT data",
    "IV": "left-side forgetting",
    "V": "insufficient optimisation",
}


@dataclass
class IlpSettings:
    samples: Optional[int] = 256  # training samples re-tested (a seeded subset); None: all of them
    seed: int = 0  # which samples, which MC distractors, the sampling seed
    probe: Literal["auto", "verify", "mc"] = "auto"  # auto: the target's Target.ilp_probe
    n: int = 5  # N of pass@N, the share of N trials that are correct (the paper's pass@N)
    threshold: float = 0.2  # unlearned: pass@N < threshold (paper: pass@5 < 0.2)
    temperature: float = 1.0  # verify: sampling temperature of the N samples
    max_new_tokens: Optional[int] = None  # verify: None -> the longest reference response + 8 tokens
    options: int = 4  # MC: options per trial (the reference + options-1 distractors)
    candidates: int = 8  # MC: distinct answers scored per sample (the support of its answer distribution)
    causes: list[str] = field(default_factory=lambda: ["auto"])  # auto: every cause whose evidence exists
    controls: list[str] = field(default_factory=lambda: list(CONTROLS))  # control runs trained for V / IV
    longer_factor: float = 2.0  # the `longer` control trains this many times the run's steps
    seed_runs: list[str] = field(default_factory=list)  # other seeds' runs: unlearned in all = stable
    # cause rules (arena/ilp/causes.py states each one)
    i_base_max: float = 0.2  # I: the base's MC pass@N at most this
    similarity: float = 0.5  # I: prompts at least this similar are "similar samples"
    ii_confidence: float = 0.4  # II: the base puts at least this probability on one wrong answer (T_conf)
    ii_jsd_max: float = 1.0  # II: optional cap on JSD(base, tuned) in bits (1: none; see arena/ilp/causes.py)
    iii_similarity: float = 0.9  # III: near-duplicate prompts (TF-IDF cosine) with another answer
    iv_early: float = 0.5  # IV: trained on only within this share of the run's steps
    iv_learned: float = 0.6  # IV: MC pass@N at an earlier checkpoint at least this
    v_drop: float = 0.05  # V: reference NLL fell by at least this share over the last checkpoint segment
    engine: str = "auto"  # generation engine of the verify probe (arena/generation)
    precision: str = "auto"
    batch_size: int = 16  # sequences per scoring forward

    def __post_init__(self):
        if self.samples is not None and self.samples <= 0:
            raise ConfigError("ilp.samples", self.samples, "must be a positive integer or null (every sample)")
        for name in ("n", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ilp.{name}", getattr(self, name), "must be a positive integer")
        if not 0 < self.threshold <= 1:
            raise ConfigError("ilp.threshold", self.threshold, "must be in (0, 1]")
        if self.temperature <= 0:
            raise ConfigError("ilp.temperature", self.temperature, "must be > 0 (the N samples are sampled)")
        if self.max_new_tokens is not None and self.max_new_tokens <= 0:
            raise ConfigError("ilp.max_new_tokens", self.max_new_tokens, "must be a positive integer or null")
        if self.options < 2:
            raise ConfigError("ilp.options", self.options, "must be >= 2 (the reference and a distractor)")
        if self.candidates < self.options:
            raise ConfigError("ilp.candidates", self.candidates, f"must be >= ilp.options ({self.options})")
        if self.longer_factor <= 1:
            raise ConfigError("ilp.longer_factor", self.longer_factor, "must be > 1")
        for c in self.causes:
            if c != "auto" and c not in CAUSES:
                allowed = ("auto",) + CAUSES
                raise ConfigError("ilp.causes", c, f"allowed: {', '.join(allowed)}{suggest(str(c), allowed)}")
        if "auto" in self.causes and len(self.causes) > 1:
            raise ConfigError("ilp.causes", self.causes, "'auto' stands alone; or list causes from I, II, III, IV, V")
        for c in self.controls:
            if c not in CONTROLS:
                raise ConfigError("ilp.controls", c, f"allowed: {', '.join(CONTROLS)}{suggest(str(c), CONTROLS)}")
        for name in ("i_base_max", "similarity", "ii_confidence", "iii_similarity", "iv_early", "iv_learned"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ConfigError(f"ilp.{name}", v, "must be in [0, 1]")
        if not 0 <= self.ii_jsd_max <= 1:  # JSD in bits lies in [0, 1]
            raise ConfigError("ilp.ii_jsd_max", self.ii_jsd_max, "must be in [0, 1] (JSD in bits)")
        if not 0 <= self.v_drop < 1:
            raise ConfigError("ilp.v_drop", self.v_drop, "must be in [0, 1)")
        from arena.generation.names import check_engine_name

        check_engine_name(self.engine, "ilp.engine")
        if self.precision not in ("auto", "fp32", "bf16-autocast", "bf16"):
            raise ConfigError("ilp.precision", self.precision, "allowed: auto, fp32, bf16-autocast, bf16")
