"""GRPO (Shao et al. 2024, DeepSeekMath): RL with verifiable rewards and group-relative advantages.

Each step samples `n_samples` completions for each of `prompts_per_step` prompts from the current
policy (`arena.rollouts`), scores them with a verifiable reward (`arena.rewards`), normalises the
rewards within each prompt's group, and minimises the clipped surrogate

    ℓ_it = −min(ρ_it A_i, clip(ρ_it, 1−ε, 1+ε) A_i) + kl_coef · KL_k3(π_θ ‖ π_ref)_it

aggregated per `loss_agg`. With one update per batch the policy is on-policy: ρ is taken against
log π_θ itself, detached (TRL's one-iteration GRPO), so ρ = 1 exactly and the gradient is
−A·∇log π_θ. The sampler's recorded log-probs would differ from the loss forward's by dropout
masks and the eval-mode engine's numerics, giving random ratios and spurious clipping; they are
kept for `kl_behaviour` (the sampler/trainer mismatch). Rollouts a worker sampled with older weights
(`services.rollout.max_staleness` > 0, docs/services.md) are off-policy: their ratio is against
the recorded behaviour log-probs, and the clip bounds it. The general clipped form is kept. As in PEFT-Arena the default has no
KL term; with `kl_coef > 0` the reference is the base model: the adapter-disabled model for PEFT
methods whose disabled adapters give back the base function, otherwise a frozen copy taken in
`prepare` (full fine-tuning, PiSSA — whose frozen weight is the SVD residual, not W0).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Optional

import torch

from arena.components import OBJECTIVES
from arena.errors import ConfigError
from arena.objectives.base import LossOutput, Objective, TrainContext
from arena.objectives.rl_losses import (LossAgg, aggregate, clipped_policy_loss, group_advantages, k3_kl,
                                        scatter_tokens, token_logprobs)
from arena.rewards import check_reward_name, resolve_reward
from arena import rollouts as R


@OBJECTIVES.register("grpo")
class GRPO(Objective):
    name = "grpo"
    description = "GRPO (RLVR): sampled groups per prompt, verifiable reward, group-relative advantages, clipped ratio"
    needs_rollouts = True

    @dataclass
    class Options:
        n_samples: int = 4  # completions per prompt (the group); PEFT-Arena used 8
        prompts_per_step: Optional[int] = None  # null: train.batch_size x train.grad_accum
        temperature: float = 1.0
        top_p: float = 1.0
        max_new_tokens: int = 64
        clip_eps: float = 0.2
        kl_coef: float = 0.0  # PEFT-Arena: no KL term
        loss_agg: LossAgg = "token-mean"
        scale_rewards: bool = True  # divide by the group's (population) std
        reward: str = "auto"  # auto: the target's default (arith, math, choice)
        backend: str = "auto"  # generation engine for rollouts (arena/generation/engine.py)

        def __post_init__(self):
            if self.n_samples < 2:
                raise ConfigError("n_samples", self.n_samples,
                                  "GRPO needs at least 2 samples per prompt (advantages are relative to the group)")
            if not 0 < self.clip_eps < 1:
                raise ConfigError("clip_eps", self.clip_eps, "must be in (0, 1)")
            if self.kl_coef < 0:
                raise ConfigError("kl_coef", self.kl_coef, "must be >= 0 (0: no KL term)")
            R.check_sampling_options(self)
            check_reward_name(self.reward, field="reward")

    def prepare(self, ctx: TrainContext) -> dict:
        o = self.options
        self.reward_name, self.reward_fn = resolve_reward(o.reward, getattr(ctx.target, "name", None))
        self.pool = R.prompt_pool_for(ctx, o.max_new_tokens, need_answer=True)
        self.per_step = R.prompts_per_step(o.prompts_per_step, ctx.train)
        self.params = R.SamplingParams(o.temperature, o.top_p, o.max_new_tokens, o.n_samples)
        self.ref_model, self.reference = None, None
        if o.kl_coef > 0:
            self.reference = self._setup_reference(ctx)
        return {"examples": len(self.pool), "dropped": self.pool.n_dropped, "prompts_per_step": self.per_step,
                "samples_per_step": self.per_step * o.n_samples, "reward": self.reward_name,
                "reference": self.reference}

    # -- reference policy for the KL term ---------------------------------------------------------
    def _setup_reference(self, ctx: TrainContext) -> str:
        model = ctx.model
        if hasattr(model, "disable_adapter") and self._disabled_is_current(ctx):
            return "adapters-disabled"
        self.ref_model = copy.deepcopy(model).eval()
        for p in self.ref_model.parameters():
            p.requires_grad_(False)
        return "frozen-copy"

    @torch.no_grad()
    def _disabled_is_current(self, ctx: TrainContext) -> bool:
        """Before training the wrapped model is the base model; disabling adapters must give it back."""
        model = ctx.model
        ids = torch.tensor([self.pool.prompt_ids[0]], device=ctx.device)
        was = model.training
        model.eval()
        try:
            cur = model(input_ids=ids, use_cache=False).logits.float()
            with model.disable_adapter():
                off = model(input_ids=ids, use_cache=False).logits.float()
        finally:
            model.train(was)
        return bool(torch.allclose(cur, off, atol=1e-4, rtol=1e-4))

    @torch.no_grad()
    def _ref_logprobs(self, ctx: TrainContext, batch: dict) -> torch.Tensor:
        T = self.options.temperature
        if self.ref_model is not None:
            logits, targets = R.completion_logits(self.ref_model, batch, ctx.device, ctx.precision)
        else:
            was = ctx.model.training
            ctx.model.eval()
            try:
                with ctx.model.disable_adapter():
                    logits, targets = R.completion_logits(ctx.model, batch, ctx.device, ctx.precision)
            finally:
                ctx.model.train(was)
        return token_logprobs(logits, targets, T).cpu()

    # -- one step ---------------------------------------------------------------------------------
    def batches(self, ctx: TrainContext, step: int) -> list[dict]:
        o = self.options
        out, t0 = [], time.perf_counter()
        rolled = R.step_rollouts(ctx, self.pool, self.per_step, self.params, step, 1, o.backend)
        gen_s = sum(ro.seconds for _, ro, _ in rolled)
        for idx, ro, b in rolled:
            answers = [self.pool.examples[i].answer for i in idx]
            rewards = torch.tensor([self.reward_fn(t, answers[g]) for t, g in zip(ro.texts, ro.group.tolist())])
            adv = group_advantages(rewards, o.n_samples, scale=o.scale_rewards)
            b["old_logprobs"] = ro.logprobs[ro.completion_mask]
            b["staleness"] = int(ro.meta.get("staleness", 0))
            b["advantages"] = adv
            # what objectives built on GRPO read (self-distillation: siblings, references)
            b["rewards"], b["texts"] = rewards, ro.texts
            b["examples"] = [self.pool.examples[idx[g]] for g in ro.group.tolist()]
            b["completions"] = ro.completion_lists()
            if o.kl_coef > 0:
                b["ref_logprobs"] = self._ref_logprobs(ctx, b)
            _, b["n_loss_tokens"] = aggregate(torch.zeros(b["completion_mask"].shape), b["completion_mask"], o.loss_agg)
            groups = rewards.view(-1, o.n_samples)
            b["metrics"] = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std(unbiased=False)),
                            "pass_rate": float((rewards >= 1.0).float().mean()),
                            "zero_std_groups": float((groups.std(1, unbiased=False) == 0).float().mean()),
                            **R.rollout_metrics(ro)}
            self.extend_batch(ctx, b, step)
            out.append(b)
        for b in out:  # the same value on every micro-batch, so the loop's average is the step total
            b["metrics"]["gen_s"] = gen_s
            b["metrics"]["rollout_s"] = time.perf_counter() - t0
        return out

    def extend_batch(self, ctx: TrainContext, batch: dict, step: int) -> None:
        """Hook for objectives built on GRPO's rollouts: add fields to a micro-batch (in place)."""

    def student_forward(self, ctx: TrainContext, batch: dict):
        """(logits [n, V], the sampled tokens [n], log π_θ of them at the sampling temperature [n],
        the completion mask [N, T], the row of every token [n]) — with gradient."""
        logits, targets = R.completion_logits(ctx.model, batch, ctx.device, ctx.precision)
        logp = token_logprobs(logits, targets, self.options.temperature)
        cmask = batch["completion_mask"].to(ctx.device)
        return logits, targets, logp, cmask, cmask.nonzero()[:, 0]

    def loss(self, ctx: TrainContext, batch: dict) -> LossOutput:
        _, _, logp, cmask, rows = self.student_forward(ctx, batch)
        return self.policy_loss(ctx, batch, logp, cmask, batch["advantages"].to(ctx.device)[rows])

    @staticmethod
    def ratio_reference(ctx: TrainContext, batch: dict, logp: torch.Tensor) -> torch.Tensor:
        """log π_old of the importance ratio: log π_θ detached for on-policy batches (ρ = 1, one
        update per batch), the recorded behaviour log-probs for stale ones (see the module docstring)."""
        if batch.get("staleness", 0) > 0:
            return batch["old_logprobs"].to(ctx.device)
        return logp.detach()

    def policy_loss(self, ctx: TrainContext, batch: dict, logp: torch.Tensor, cmask: torch.Tensor,
                    adv: torch.Tensor, metrics: dict | None = None) -> LossOutput:
        """GRPO's clipped surrogate (+ KL) with per-token advantages `adv` [n], aggregated per loss_agg."""
        o = self.options
        per_tok, clipped = clipped_policy_loss(logp, self.ratio_reference(ctx, batch, logp), adv, o.clip_eps)
        metrics = {**batch.get("metrics", {}), **(metrics or {})}
        with torch.no_grad():
            metrics["clip_fraction"] = float(clipped.float().mean())
            # the sampler vs this forward (dropout, engine numerics, and staleness when stale)
            metrics["kl_behaviour"] = float(k3_kl(logp, batch["old_logprobs"].to(ctx.device)).mean())
        if o.kl_coef > 0:
            kl = k3_kl(logp, batch["ref_logprobs"].to(ctx.device))
            per_tok = per_tok + o.kl_coef * kl
            metrics["kl"] = float(kl.detach().mean())
        loss_sum, units = aggregate(scatter_tokens(per_tok, cmask), cmask, o.loss_agg)
        return LossOutput(loss_sum, units, metrics)
