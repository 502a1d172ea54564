"""The stateful SFT mitigations of incomplete learning: dynamic resampling and progressive epochs.

Both are plain state machines fed with losses by the SFT objective (arena/objectives/sft.py), which
scores the model; they decide, they never touch a model. Their state is a JSON dict saved in each
checkpoint (`Objective.state_dict`), so a resumed run takes the same decisions as an uninterrupted one.

Dynamic resampling (per subset s = Example.meta["source"]), checked every K steps:
    dropping(s) ⇔ (L_dev(s) − min_{earlier checks} L_dev(s)) / min L_dev(s) > drop
and until the next check `share` of each micro-batch's rows are replaced by rows holding
examples of a dropping subset.

Progressive epochs: after epoch e (the step at which the stream has read e·N rows),
    stop ⇔ L_val(e) > L_val(e−1) + δ   or   e = max_epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Resampler:
    every: int
    drop: float
    share: float
    best: dict = field(default_factory=dict)  # subset -> lowest dev NLL seen at a check
    dropping: list = field(default_factory=list)  # subsets resampled until the next check
    checks: list = field(default_factory=list)  # [{"step", "dev_nll", "dropping"}]

    def due(self, step1: int) -> bool:
        return self.every > 0 and step1 % self.every == 0

    def update(self, step1: int, dev_nll: dict[str, float]) -> dict:
        """Record one check's per-subset dev NLL; returns what to log."""
        dropping = []
        for s in sorted(dev_nll):
            v, best = float(dev_nll[s]), self.best.get(s)
            if best is not None and best > 0 and (v - best) / best > self.drop:
                dropping.append(s)
            self.best[s] = v if best is None else min(best, v)
        self.dropping = dropping
        self.checks.append({"step": step1, "dev_nll": {s: round(float(v), 6) for s, v in dev_nll.items()},
                            "dropping": dropping})
        return {"dev_nll": {s: round(float(v), 6) for s, v in sorted(dev_nll.items())}, "resampled": dropping}

    def n_replaced(self, batch_size: int) -> int:
        if not self.dropping:
            return 0
        return min(batch_size, max(1, round(self.share * batch_size)))

    def replace(self, rows: np.ndarray, seed: int, step: int, micro: int,
                subset_rows: dict[str, np.ndarray]) -> tuple[np.ndarray, list[int]]:
        """rows with `n_replaced` of them (seeded positions) swapped for rows of dropping subsets;
        returns (rows, replaced positions)."""
        k = self.n_replaced(len(rows))
        pool = np.unique(np.concatenate([subset_rows[s] for s in self.dropping if s in subset_rows] or [[]]))
        if k == 0 or pool.size == 0:
            return rows, []
        rng = np.random.default_rng([seed, step, micro, 0x5E5])
        where = np.sort(rng.choice(len(rows), size=k, replace=False))
        out = rows.copy()
        out[where] = rng.choice(pool.astype(np.int64), size=k, replace=True)
        return out, where.tolist()

    def state_dict(self) -> dict:
        return {"best": dict(self.best), "dropping": list(self.dropping), "checks": list(self.checks)}

    def load_state_dict(self, d: dict) -> None:
        self.best = dict(d.get("best", {}))
        self.dropping = list(d.get("dropping", []))
        self.checks = list(d.get("checks", []))


@dataclass
class Progressive:
    max_epochs: int
    stop_delta: float
    epoch_ends: list  # 1-based step after which epoch e (1-based, index e-1) has been read
    val_curve: list = field(default_factory=list)  # L_val after epoch 1, 2, ...
    stopped_at: int | None = None

    @staticmethod
    def epoch_end_steps(n_rows: int, rows_per_step: int, max_epochs: int, steps: int) -> list[int]:
        """ceil(e·N / rows_per_step) for e = 1..max_epochs, capped at train.steps (duplicates dropped:
        an epoch shorter than a step ends at the same step as the previous one)."""
        ends = []
        for e in range(1, max_epochs + 1):
            s = min(steps, math.ceil(e * n_rows / rows_per_step))
            if not ends or s > ends[-1]:
                ends.append(s)
        return ends

    def due(self, step1: int) -> bool:
        return self.stopped_at is None and step1 in self.epoch_ends

    def update(self, step1: int, val: float) -> dict:
        prev = self.val_curve[-1] if self.val_curve else None
        self.val_curve.append(round(float(val), 6))
        rose = prev is not None and val > prev + self.stop_delta
        last = len(self.val_curve) >= self.max_epochs
        out = {"epoch": len(self.val_curve), "val_nll": round(float(val), 6)}
        if rose or last:
            self.stopped_at = step1
            out.update(stop=True, stop_reason="val_rose" if rose else "max_epochs")
        return out

    def state_dict(self) -> dict:
        return {"val_curve": list(self.val_curve), "epochs": len(self.val_curve), "stopped_at": self.stopped_at}

    def load_state_dict(self, d: dict) -> None:
        self.val_curve = list(d.get("val_curve", []))
        self.stopped_at = d.get("stopped_at")
