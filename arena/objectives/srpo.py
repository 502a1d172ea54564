"""SRPO, sample-routed policy optimisation (Li et al. 2026, arXiv 2604.02288; no official code).

GRPO's groups are sampled and scored, then each sample is routed (`sd_losses.srpo_route`):

    z_i^SDPO = (1 − c_i)·m_i     c_i: sample i is correct; m_i: a sibling j ≠ i is correct

so failed samples that have a correct sibling are distilled from the self-teacher shown that
sibling (SDPO's loss), and everything else — correct samples, all-wrong groups (zero advantage) —
gets GRPO's clipped surrogate. The SDPO tokens are weighted by the teacher's confidence,
w_t = exp(−β·H_T,t) normalised to mean 1 over the routed tokens (§3.2), and both losses share one
token denominator (§3.3):

    L = [Σ_{z^GRPO} ℓ^GRPO_t + Σ_{z^SDPO} w_t·ℓ^SDPO_t] / Σ_i |y_i|

Defaults as SRPO's Table 3 (β = 1, top-100 JSD, EMA 0.05, is_clip 2). Two details the paper leaves
open, chosen here and logged: H_T is over the full vocabulary, and w is normalised over the
routed tokens of each micro-batch (= the step's when train.grad_accum = 1, the default).

Logged per step: routed_sdpo (share of samples routed to SDPO), routed_tokens, teacher_entropy,
weight_std / weight_max (spread of w), divergence, overlap, clip_fraction.
"""

from __future__ import annotations

from dataclasses import dataclass
from arena.components import OBJECTIVES
from arena.errors import ConfigError
from arena.objectives.base import LossOutput, TrainContext
from arena.objectives.rl_losses import clipped_policy_loss
from arena.objectives.sd_losses import entropy_weights, srpo_route
from arena.objectives.sdpo import DistillOptions, distill_terms
from arena.objectives.self_distill import SelfDistilled


@OBJECTIVES.register("srpo")
class SRPO(SelfDistilled):
    name = "srpo"
    description = "SRPO: failed samples with a correct sibling -> SDPO (entropy-weighted), the rest -> GRPO"

    @dataclass
    class Options(DistillOptions):
        beta: float = 1.0  # w = exp(-beta * teacher entropy), normalised to mean 1

        def __post_init__(self):
            super().__post_init__()
            if self.beta < 0:
                raise ConfigError("beta", self.beta, "must be >= 0 (0: no entropy weighting)")
            if self.loss_agg != "token-mean":
                raise ConfigError("loss_agg", self.loss_agg, "SRPO has one shared token denominator: token-mean only")

    def teacher_contexts(self, batch: dict, step: int) -> dict[int, dict]:
        routed = srpo_route(batch["rewards"], self.options.n_samples, self.options.success_threshold)
        ctxs = self.solution_contexts(batch, routed.nonzero().flatten().tolist())
        batch["metrics"]["routed_sdpo"] = len(ctxs) / max(1, len(batch["rewards"]))
        return ctxs

    def batches(self, ctx: TrainContext, step: int) -> list[dict]:
        out = super().batches(ctx, step)
        for b in out:
            b["n_loss_tokens"] = int(b["completion_mask"].sum())
        return out

    def loss(self, ctx: TrainContext, batch: dict) -> LossOutput:
        o = self.options
        sel, t_logits = self.teacher_logits(ctx, batch)
        logits, _, logp, cmask, tok_rows = self.student_forward(ctx, batch)
        old = batch["old_logprobs"].to(ctx.device)  # the sampler: what is_clip's IS weights correct for
        adv = batch["advantages"].to(ctx.device)[tok_rows]
        pg, clipped = clipped_policy_loss(logp, self.ratio_reference(ctx, batch, logp), adv, o.clip_eps)
        metrics = dict(batch["metrics"])
        metrics["clip_fraction"] = float(clipped[~sel].float().mean()) if (~sel).any() else 0.0
        metrics["routed_tokens"] = float(sel.float().mean())
        total = pg[~sel].sum() + logp.sum() * 0.0
        if sel.any():
            sd, diag = distill_terms(logits, t_logits, logp, old, sel, o)
            w, h = entropy_weights(t_logits[:, : logits.shape[-1]], o.beta)
            total = total + (w * sd).sum()
            metrics.update(diag, teacher_entropy=float(h.mean()), weight_std=float(w.std(unbiased=False)),
                           weight_max=float(w.max()), distill_loss=float(sd.detach().mean()))
        return LossOutput(total, batch["n_loss_tokens"], metrics)
