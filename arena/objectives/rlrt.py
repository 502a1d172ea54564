"""RLRT, "Rebellious Student" (Kim, Jeon, Li, Yang 2026, arXiv 2605.10781): GRPO that reinforces,
on *correct* rollouts, the tokens the self-teacher would not have predicted.

    D̂_t = sg(log P_S(y_t) − log P_T(y_t)),   w_t = exp(sign(A)·D̂_t) = (P_S/P_T)^sign(A)
    Â_t = A·[(1 − λ) + λ·clip(w_t, 1 − ε, 1 + ε)]   on rollouts with reward ≥ success_threshold
    Â_t = A                                       on the others (plain GRPO)

with the teacher the same network shown a correct sibling (`template`, slot {solution}); a correct
rollout without another correct sibling keeps A. The sign-reversed gap of RLSD, gated by the reward.

What could not be confirmed: the paper body was not available to us — only its abstract and
introduction (the reward gate on correct rollouts, the "self-driven tokens" reading) and secondary
sources (a paper index, a research note, a third-party TRL reimplementation) for the Â_t form and
the sibling-conditioned teacher. λ, ε, the teacher's weights and template are therefore our
choices: λ = 0.5 constant, ε = 0.2 (RLSD's), current weights, SDPO's solution template. The
reported collapse without the reward gate (its Fig. 9a) is why the gate is not an option.

Logged per step: gated (share of samples reweighted), weight_mean / weight_std / weight_clipped,
teacher_gap (mean log P_T − log P_S on the gated tokens), teacher_entropy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from arena.components import OBJECTIVES
from arena.objectives.base import LossOutput, TrainContext
from arena.objectives.rlsd import check_reweighting, reweighted_loss
from arena.objectives.sd_losses import linear_decay
from arena.objectives.self_distill import SelfDistilled
from arena.objectives.self_teacher import TeacherMode


@OBJECTIVES.register("rlrt")
class RLRT(SelfDistilled):
    name = "rlrt"
    description = "RLRT: GRPO reinforcing, on correct rollouts, tokens the sibling-shown self-teacher would not predict"

    @dataclass
    class Options(SelfDistilled.Options):
        lam: float = 0.5
        lam_decay_steps: Optional[int] = None  # null: constant λ
        eps_w: float = 0.2
        teacher_weights: TeacherMode = "current"

        def __post_init__(self):
            super().__post_init__()
            check_reweighting(self)

    def teacher_contexts(self, batch: dict, step: int) -> dict[int, dict]:
        o = self.options
        batch["lam"] = linear_decay(o.lam, step, o.lam_decay_steps)
        correct = (batch["rewards"] >= o.success_threshold) & (batch["advantages"] != 0)
        ctxs = self.solution_contexts(batch, correct.nonzero().flatten().tolist())
        batch["metrics"]["gated"] = len(ctxs) / max(1, len(batch["rewards"]))
        return ctxs

    def loss(self, ctx: TrainContext, batch: dict) -> LossOutput:
        return reweighted_loss(self, ctx, batch, -1.0)
