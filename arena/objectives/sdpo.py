"""SDPO, self-distillation policy optimisation (Hübotter et al. 2026, arXiv 2601.20802; reference
code lasgroup/SDPO, `compute_self_distillation_loss`).

GRPO's groups are sampled and scored; every sample whose group holds a successful *other* rollout
(reward ≥ `success_threshold`) is re-scored by the self-teacher — the same network after the prompt
plus that sibling ("Correct solution: …"; `template`). The loss is the token-mean divergence
between the student and sg[teacher] over those samples' tokens,

    ℓ_t = D_α(π_S(·|x, y<t) ‖ sg π_T(·|x, c, y<t)) · min(π_θ(y_t)/π_old(y_t), is_clip)

(`sd_losses.sdpo_divergence`: α = 1 reverse KL, α = 0 forward KL, else generalized JSD; full
vocabulary or the student's top-k plus a tail bucket). A sample with no successful sibling gets no
loss, so a lone success teaches nothing (as in the reference). With `distill_weight` w < 1 the
step loss is TRL's blend (1 − w)·mean ℓ^GRPO + w·mean ℓ^SDPO; the official default, w = 1,
replaces the policy gradient. Defaults follow the reference yaml (top-100 JSD α = 0.5, EMA 0.05,
is_clip 2, threshold 0.5); the environment feedback slot of the reference is not offered: no
arena reward returns feedback text.

Logged per step: teacher_share (samples with a teacher), success_rate, distill_loss (mean ℓ),
teacher_entropy, overlap (top-`diag_k` agreement of teacher and student), is_clipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from arena.components import OBJECTIVES
from arena.errors import ConfigError
from arena.objectives.base import LossOutput, TrainContext
from arena.objectives.rl_losses import clipped_policy_loss, topk_agreement
from arena.objectives.sd_losses import is_weights, sdpo_divergence, teacher_entropy
from arena.objectives.self_distill import SelfDistilled
from arena.objectives.self_teacher import TeacherRows
from arena.objectives.teacher import align_vocab


def check_divergence_options(o) -> None:
    if not 0 <= o.alpha <= 1:
        raise ConfigError("alpha", o.alpha, "must be in [0, 1] (0: forward KL, 1: reverse KL, else JSD)")
    if o.top_k is not None and o.top_k <= 0:
        raise ConfigError("top_k", o.top_k, "must be a positive integer or null (full vocabulary)")
    if o.is_clip is not None and o.is_clip <= 0:
        raise ConfigError("is_clip", o.is_clip, "must be > 0 or null (no importance weights)")


def distill_terms(logits, t_logits, logp, old, sel, o, diag_k: int = 8) -> tuple[torch.Tensor, dict]:
    """SDPO's per-token loss at the teacher rows' tokens [n_sel] and its diagnostics."""
    s, t = align_vocab(logits[sel].float() / o.temperature, t_logits)
    d = sdpo_divergence(s, t, o.alpha, o.top_k, o.add_tail)
    w = is_weights(logp[sel], old[sel], o.is_clip)
    agree = topk_agreement(s.detach(), t, diag_k)
    return d * w, {"divergence": float(d.detach().mean()), "overlap": float(agree["overlap"].mean()),
                   "teacher_entropy": float(teacher_entropy(t).mean()),
                   "is_clipped": float((w >= (o.is_clip or float("inf"))).float().mean())}


@dataclass
class DistillOptions(SelfDistilled.Options):
    """The divergence options SDPO and SRPO share."""

    alpha: float = 0.5  # 0: forward KL(T||S), 1: reverse KL(S||T), else generalized JSD
    top_k: Optional[int] = 100  # the student's top-k + a tail bucket; null: full vocabulary
    add_tail: bool = True  # top-k: tail bucket (True) or renormalise on the k tokens
    is_clip: Optional[float] = 2.0  # importance weight cap; null: none

    def __post_init__(self):
        super().__post_init__()
        check_divergence_options(self)


@OBJECTIVES.register("sdpo")
class SDPO(SelfDistilled):
    name = "sdpo"
    description = "self-distillation (SDPO): distil into the student the same model shown a successful sibling"

    @dataclass
    class Options(DistillOptions):
        distill_weight: float = 1.0  # 1: SDPO replaces the policy gradient (official); <1: TRL's blend

        def __post_init__(self):
            super().__post_init__()
            if not 0 <= self.distill_weight <= 1:
                raise ConfigError("distill_weight", self.distill_weight, "must be in [0, 1]")

    def teacher_contexts(self, batch: dict, step: int) -> dict[int, dict]:
        return self.solution_contexts(batch, range(len(batch["rewards"])))

    def batches(self, ctx: TrainContext, step: int) -> list[dict]:
        out = super().batches(ctx, step)
        # The step's loss is a mean over the distilled tokens of all micro-batches (the loop divides
        # by Σ n_loss_tokens); the blend's GRPO mean is over all tokens, rescaled to that divisor.
        distilled = [int(TeacherRows.of(b).token_mask(b["completion_mask"]).sum()) for b in out]
        n_sd, n_all = map(int, ctx.sum_over_ranks([sum(distilled), sum(int(b["completion_mask"].sum()) for b in out)]))
        for b, n in zip(out, distilled):
            b["n_loss_tokens"] = n if n_sd else int(b["completion_mask"].sum())
            b["pg_scale"] = (n_sd / n_all) if n_sd else 1.0
        return out

    def loss(self, ctx: TrainContext, batch: dict) -> LossOutput:
        o = self.options
        sel, t_logits = self.teacher_logits(ctx, batch)
        logits, _, logp, cmask, tok_rows = self.student_forward(ctx, batch)
        old = batch["old_logprobs"].to(ctx.device)  # the sampler: what is_clip's IS weights correct for
        metrics = dict(batch["metrics"])
        total = logp.sum() * 0.0  # keeps the graph when no token is distilled
        if sel.any():
            sd, diag = distill_terms(logits, t_logits, logp, old, sel, o)
            total = total + o.distill_weight * sd.sum()
            metrics.update(diag, distill_loss=float(sd.detach().mean()))
        if o.distill_weight < 1:
            adv = batch["advantages"].to(ctx.device)[tok_rows]
            pg, clipped = clipped_policy_loss(logp, self.ratio_reference(ctx, batch, logp), adv, o.clip_eps)
            total = total + (1 - o.distill_weight) * pg.sum() * batch["pg_scale"]
            metrics["clip_fraction"] = float(clipped.float().mean())
        return LossOutput(total, batch["n_loss_tokens"], metrics)
