"""MOPD, multi-teacher on-policy distillation (as in the MiMo-V2-Flash report, arXiv 2601.02780,
Eqs. 7–8, read from transcriptions that agree with each other; a standalone MOPD paper, arXiv
2606.30406, uses the same per-prompt routing).

Each prompt belongs to a domain (`domain_key`: a field of the target's example metadata, e.g.
arith's `op`; null: the whole target is one domain) and is routed to that domain's teacher
(`teachers`: domain -> model or arena run folder, all with the student's tokenizer). The student
samples; the teacher re-scores the sampled tokens; the loss is the sampled-token distillation
policy gradient with training/inference importance weights masked outside [is_low, is_high]:

    Â_t = sg[log π_T(d(x))(y_t) − log π_θ(y_t)] + α·Â_ORM        (α = `orm_coef`; Â_ORM: GRPO's
    w_t = sg[π_θ(y_t)/μ(y_t)] if in [is_low, is_high], else 0      group advantage of the reward)
    L  = −Σ_t w_t·Â_t·log π_θ(y_t) / Σ_i |y_i|

(`sd_losses.masked_is_weights`, `sampled_token_distill_loss`). With one teacher, α = 0 and
`is_correction: false` it is OPD with `estimator: sampled-token`. The report gives no values for
the mask bounds; [0.5, 2] is our choice (SDPO's is_clip is 2). All log-probs are at the sampling
temperature (1 by default).

Logged per step: share of samples per domain (`domain_<d>`), is_masked (tokens dropped by the IS
mask), rkl_sampled (mean log π_θ − log π_T, a per-token reverse-KL estimate) overall and per
domain, and reward_mean when `orm_coef > 0`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from arena.components import OBJECTIVES
from arena.errors import ConfigError
from arena.objectives.base import LossOutput, Objective, TrainContext
from arena.objectives.rl_losses import group_advantages, token_logprobs
from arena.objectives.sd_losses import masked_is_weights, sampled_token_distill_loss
from arena.objectives.opd import monitor_reward, reward_metrics
from arena.objectives.teacher import check_teacher_tokenizer, model_label, open_teacher, teacher_scores
from arena.rewards import check_reward_name, resolve_reward
from arena import rollouts as R


def example_domain(example, key: Optional[str], target_name: str) -> str:
    if key is None:
        return target_name
    if key not in example.meta:
        raise ConfigError("objective.domain_key", key,
                          f"the target's examples have no meta field {key!r}; they carry: {sorted(example.meta) or 'none'}")
    return str(example.meta[key])


@OBJECTIVES.register("mopd")
class MOPD(Objective):
    name = "mopd"
    description = "multi-teacher OPD: each prompt routed to its domain's teacher, sampled-token advantages, masked IS"
    needs_rollouts = True

    @dataclass
    class Options:
        teachers: dict[str, str] = field(default_factory=dict)  # domain -> model / arena run folder (required)
        domain_key: Optional[str] = None  # example.meta field naming the domain; null: the target is one domain
        n_samples: int = 1
        prompts_per_step: Optional[int] = None  # null: train.batch_size x train.grad_accum
        temperature: float = 1.0
        top_p: float = 1.0
        max_new_tokens: int = 64
        is_correction: bool = True  # masked training/inference importance weights
        is_low: float = 0.5
        is_high: float = 2.0
        orm_coef: float = 0.0  # α: weight of the outcome-reward (GRPO) advantage; needs n_samples >= 2
        reward: str = "auto"
        backend: str = "auto"

        def __post_init__(self):
            if self.n_samples <= 0:
                raise ConfigError("n_samples", self.n_samples, "must be a positive integer")
            if not 0 <= self.is_low < 1 < self.is_high:
                raise ConfigError("is_low", [self.is_low, self.is_high], "need 0 <= is_low < 1 < is_high")
            if self.orm_coef < 0:
                raise ConfigError("orm_coef", self.orm_coef, "must be >= 0 (0: distillation only)")
            if self.orm_coef > 0 and self.n_samples < 2:
                raise ConfigError("n_samples", self.n_samples, "must be >= 2 with orm_coef > 0 (group advantages)")
            for d, ref in self.teachers.items():
                if not str(ref).strip():
                    raise ConfigError(f"teachers.{d}", ref, "a model name/folder or an arena run folder")
            R.check_sampling_options(self)
            check_reward_name(self.reward, field="reward")

    @classmethod
    def validate_options(cls, options) -> None:
        if not options.teachers:
            raise ConfigError("objective.teachers", options.teachers,
                              "required: a mapping domain -> teacher (model or arena run folder), e.g. {'+': runs/add}")

    def prepare(self, ctx: TrainContext) -> dict:
        o = self.options
        self.validate_options(o)
        self.pool = R.prompt_pool_for(ctx, o.max_new_tokens, need_answer=o.orm_coef > 0)
        target_name = getattr(ctx.target, "name", "target")
        self.domains = [example_domain(e, o.domain_key, target_name) for e in self.pool.examples]
        seen = sorted(set(self.domains))
        missing = [d for d in seen if d not in o.teachers]
        if missing:
            raise ConfigError("objective.teachers", sorted(o.teachers),
                              f"no teacher for domain(s) {missing} (domains of the training prompts: {seen}; "
                              + (f"domain_key {o.domain_key!r})" if o.domain_key else "domain_key null: the target's name)"))
        used = [d for d in o.teachers if d in seen]
        student = model_label(ctx.tokenizer, ctx.model)
        for d in used:  # every tokenizer before any teacher's weights
            check_teacher_tokenizer(o.teachers[d], ctx.tokenizer, student)
        if ctx.extras.get("teachers") is None:
            ctx.extras["teachers"] = {}
            for d in used:  # a model, or a teacher service's handle (services.teacher)
                teacher, _, info = open_teacher(ctx, o.teachers[d])
                ctx.extras["teachers"][d] = (teacher, info)
        self.reward_fn = resolve_reward(o.reward, target_name)[1] if o.orm_coef > 0 else None
        self.monitor = monitor_reward(ctx)
        self.per_step = R.prompts_per_step(o.prompts_per_step, ctx.train)
        self.params = R.SamplingParams(o.temperature, o.top_p, o.max_new_tokens, o.n_samples)
        counts = {d: self.domains.count(d) for d in seen}
        return {"examples": len(self.pool), "dropped": self.pool.n_dropped, "prompts_per_step": self.per_step,
                "samples_per_step": self.per_step * o.n_samples, "domains": counts,
                "teachers": {d: ctx.extras["teachers"][d][1] for d in used},
                "unused_teachers": sorted(set(o.teachers) - set(seen))}

    def batches(self, ctx: TrainContext, step: int) -> list[dict]:
        o = self.options
        out, t0 = [], time.perf_counter()
        # the same rollouts as OPD's (seed tag 2): with one teacher MOPD is OPD's sampled-token form
        rolled = R.step_rollouts(ctx, self.pool, self.per_step, self.params, step, 2, o.backend)
        gen_s = sum(ro.seconds for _, ro, _ in rolled)
        for idx, ro, b in rolled:
            doms = [self.domains[idx[g]] for g in ro.group.tolist()]
            b["old_logprobs"] = ro.logprobs[ro.completion_mask]
            b["teacher_logprobs"] = self._teacher_logprobs(ctx, b, doms)
            b["n_loss_tokens"] = b["n_completion"]
            b["domains"] = doms
            b["metrics"] = {**R.rollout_metrics(ro), **reward_metrics(
                self.monitor, ro.texts, [self.pool.examples[idx[g]] for g in ro.group.tolist()])}
            for d in sorted(set(self.domains)):
                b["metrics"][f"domain_{d}"] = doms.count(d) / len(doms)
            if o.orm_coef > 0:
                answers = [self.pool.examples[idx[g]].answer for g in ro.group.tolist()]
                rewards = torch.tensor([self.reward_fn(t, a) for t, a in zip(ro.texts, answers)])
                b["orm_advantages"] = group_advantages(rewards, o.n_samples)
                b["metrics"]["reward_mean"] = float(rewards.mean())
            out.append(b)
        for b in out:
            b["metrics"]["gen_s"] = gen_s
            b["metrics"]["rollout_s"] = time.perf_counter() - t0
        return out

    @torch.no_grad()
    def _teacher_logprobs(self, ctx: TrainContext, batch: dict, doms: list[str]) -> torch.Tensor:
        """log π_T(d)(y_t) at every completion token [n] (row-major), each row by its domain's teacher."""
        cmask = batch["completion_mask"]
        row_of = cmask.nonzero()[:, 0]
        out = torch.zeros(row_of.numel())
        T = self.options.temperature
        for d in sorted(set(doms)):
            rows = [i for i, x in enumerate(doms) if x == d]
            sub = {"input_ids": batch["input_ids"][rows], "labels": batch["labels"][rows]}
            scores = teacher_scores(ctx.extras["teachers"][d][0], sub, ctx.device, ctx.precision, T)
            lp = scores.sampled_logp if scores.logits is None else token_logprobs(scores.logits, scores.targets, T)
            sel = torch.isin(row_of, torch.tensor(rows))
            out[sel] = lp.cpu()
        return out

    def loss(self, ctx: TrainContext, batch: dict) -> LossOutput:
        o = self.options
        logits, targets = R.completion_logits(ctx.model, batch, ctx.device, ctx.precision)
        logp = token_logprobs(logits, targets, o.temperature)
        lt = batch["teacher_logprobs"].to(ctx.device)
        cmask = batch["completion_mask"].to(ctx.device)
        row_of = cmask.nonzero()[:, 0]
        w = (masked_is_weights(logp, batch["old_logprobs"].to(ctx.device), o.is_low, o.is_high)
             if o.is_correction else None)
        extra = o.orm_coef * batch["orm_advantages"].to(ctx.device)[row_of] if o.orm_coef > 0 else None
        per_tok = sampled_token_distill_loss(logp, lt, w, extra)
        metrics = dict(batch["metrics"])
        with torch.no_grad():
            gap = logp.detach() - lt
            metrics["rkl_sampled"] = float(gap.mean())
            if w is not None:
                metrics["is_masked"] = float((w == 0).float().mean())
            doms = batch["domains"]
            for d in sorted(set(doms)):
                rows = torch.tensor([i for i, x in enumerate(doms) if x == d], device=row_of.device)
                metrics[f"rkl_{d}"] = float(gap[torch.isin(row_of, rows)].mean())
        return LossOutput(per_tok.sum(), int(per_tok.numel()), metrics)
