"""RLSD, RL with self-distilled token credit (arXiv 2604.03128 v2; no official code).

GRPO, with each token's advantage rescaled by how much more (A > 0) or less (A < 0) likely the
self-teacher — the same network told the reference answer (`template`, slot {answer}) — finds the
sampled token than the student does (`sd_losses.reweighted_advantages`):

    Δ_t = sg(log P_T(y_t) − log P_S(y_t)),   w_t = exp(sign(A)·Δ_t)
    Â_t = A·[(1 − λ) + λ·clip(w_t, 1 − ε_w, 1 + ε_w)]

in place of A in GRPO's clipped surrogate; no extra loss term. Defaults from the paper: ε_w = 0.2,
λ = 0.5 decaying linearly to 0 over the first 50 steps (`lam_decay_steps`; null keeps λ fixed —
taken literally the schedule turns RLSD into GRPO after step 50, and runs shorter than that see
only its start), teacher weights synced every 10 steps and frozen in between. Read as Eq. 15 and
Algorithm 1 (A·clip(w)); Eq. 16's PPO-style min[w·A, clip(w)·A] disagrees outside the clip
range and is not what is implemented. The teacher's template is not given in the paper; ours is
SOLUTION_TEMPLATE's shape with the answer in place of a solution.

Logged per step: lambda, weight_mean / weight_std (unclipped w), weight_clipped (share outside
[1 − ε_w, 1 + ε_w]), teacher_gap (mean Δ), teacher_entropy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from arena.components import OBJECTIVES
from arena.errors import ConfigError
from arena.objectives.base import LossOutput, TrainContext
from arena.objectives.sd_losses import linear_decay, reweighted_advantages
from arena.objectives.self_distill import SelfDistilled
from arena.objectives.self_teacher import ANSWER_TEMPLATE, TeacherMode


def check_reweighting(o) -> None:
    if not 0 <= o.lam <= 1:
        raise ConfigError("lam", o.lam, "must be in [0, 1] (0: plain GRPO advantages)")
    if not 0 < o.eps_w < 1:
        raise ConfigError("eps_w", o.eps_w, "must be in (0, 1)")
    if o.lam_decay_steps is not None and o.lam_decay_steps <= 0:
        raise ConfigError("lam_decay_steps", o.lam_decay_steps, "must be a positive integer or null (constant λ)")


def reweighted_loss(obj: SelfDistilled, ctx: TrainContext, batch: dict, sign: float) -> LossOutput:
    """GRPO's loss with Â_t in place of A on the teacher rows' tokens (sign +1: RLSD's Δ, −1: RLRT's)."""
    o = obj.options
    logits, targets, logp, cmask, tok_rows = obj.student_forward(ctx, batch)
    gap, sel, metrics = obj.teacher_gap(ctx, batch, logits, targets, logp)
    adv = batch["advantages"].to(ctx.device)[tok_rows]
    lam = batch["lam"]
    new_adv, w = reweighted_advantages(adv, sign * gap, lam, o.eps_w, gate=sel)
    metrics["lambda"] = lam
    if sel.any():
        ws = w[sel]
        metrics.update(weight_mean=float(ws.mean()), weight_std=float(ws.std(unbiased=False)),
                       weight_clipped=float(((ws < 1 - o.eps_w) | (ws > 1 + o.eps_w)).float().mean()))
    return obj.policy_loss(ctx, batch, logp, cmask, new_adv, metrics)


@OBJECTIVES.register("rlsd")
class RLSD(SelfDistilled):
    name = "rlsd"
    description = "RLSD: GRPO with token advantages reweighted by the self-teacher told the answer"
    REQUIRED_SLOTS = ("answer",)

    @dataclass
    class Options(SelfDistilled.Options):
        template: str = ANSWER_TEMPLATE
        lam: float = 0.5  # λ at step 0
        lam_decay_steps: Optional[int] = 50  # λ -> 0 linearly over these steps; null: constant
        eps_w: float = 0.2  # clip of the token weight
        teacher_weights: TeacherMode = "synced"
        teacher_sync_every: int = 10

        def __post_init__(self):
            super().__post_init__()
            check_reweighting(self)

    def teacher_contexts(self, batch: dict, step: int) -> dict[int, dict]:
        # every sample with a non-zero advantage (A = 0 gives Â = 0 whatever the teacher says)
        batch["lam"] = linear_decay(self.options.lam, step, self.options.lam_decay_steps)
        adv = batch["advantages"]
        return {r: {"answer": batch["examples"][r].answer} for r in range(len(adv)) if adv[r] != 0}

    def loss(self, ctx: TrainContext, batch: dict) -> LossOutput:
        return reweighted_loss(self, ctx, batch, +1.0)
