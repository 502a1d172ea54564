"""GKD: generalized knowledge distillation (Agarwal et al. 2024, "On-Policy Distillation of
Language Models: Learning from Self-Generated Mistakes").

Each micro-batch is, with probability λ (`lmbda`), the student's own samples of the target's
prompts (on-policy), otherwise the target's reference responses (off-policy, supervised KD). The
loss is the token-mean generalized Jensen-Shannon divergence between teacher and student at
`temperature`,

    JSD_β = β·KL(π_T ‖ M) + (1 − β)·KL(π_S ‖ M),   M = β·π_T + (1 − β)·π_S,

with TRL's convention at the end points (`GKDTrainer.generalized_jsd_loss`): β = 0 is the forward
KL(π_T ‖ π_S), β = 1 the reverse KL(π_S ‖ π_T). λ = 1, β = 1, temperature 1 is OPD without the
top-k option. Defaults follow TRL's GKDConfig (λ 0.5, β 0.5, temperature 0.9). The λ draw is
seeded by (seed, step, micro-batch), so a resumed run makes the same choices.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

import torch

from arena.components import OBJECTIVES
from arena.errors import ConfigError
from arena.objectives.base import LossOutput, Objective, TrainContext
from arena.objectives.opd import prepare_distillation, require_teacher
from arena.objectives.rl_losses import generalized_jsd, reverse_kl
from arena.objectives.teacher import align_vocab, teacher_completion_logits
from arena import rollouts as R
from arena.generation.seeds import derive_seed


@OBJECTIVES.register("gkd")
class GKD(Objective):
    name = "gkd"
    description = "generalized KD: on-policy samples with prob. lmbda else reference responses; generalized JSD(beta)"
    needs_rollouts = True

    @dataclass
    class Options:
        teacher: Optional[str] = None  # model name / folder / hub id, or an arena run folder (required)
        lmbda: float = 0.5  # probability that a micro-batch is on-policy (student samples)
        beta: float = 0.5  # 0: forward KL(teacher||student), 1: reverse KL(student||teacher)
        temperature: float = 0.9  # sampling and divergence temperature (TRL's default)
        top_p: float = 1.0
        max_new_tokens: int = 64
        n_samples: int = 1  # on-policy completions per prompt
        prompts_per_step: Optional[int] = None  # null: train.batch_size x train.grad_accum
        backend: str = "auto"  # generation engine for rollouts (arena/generation/engine.py)

        def __post_init__(self):
            if not 0 <= self.lmbda <= 1:
                raise ConfigError("lmbda", self.lmbda, "must be in [0, 1] (probability of on-policy batches)")
            if not 0 <= self.beta <= 1:
                raise ConfigError("beta", self.beta, "must be in [0, 1] (0: forward KL, 1: reverse KL)")
            if self.n_samples <= 0:
                raise ConfigError("n_samples", self.n_samples, "must be a positive integer")
            R.check_sampling_options(self)

    @classmethod
    def validate_options(cls, options) -> None:
        require_teacher(options)

    def prepare(self, ctx: TrainContext) -> dict:
        return prepare_distillation(self, ctx)

    def _reference_completions(self, ctx: TrainContext, idx: list[int]) -> list[list[int]]:
        """The target's reference responses as completion tokens (chat template, ending in EOS), cut
        to the row budget train.seq_len like SFT truncates."""
        from arena.training.packing import chat_texts

        out = []
        for i in idx:
            ex = self.pool.examples[i]
            p, full = chat_texts(ctx.tokenizer, ex.prompt, ex.response)
            ids = ctx.tokenizer(full[len(p):], add_special_tokens=False)["input_ids"]
            out.append(ids[: max(1, ctx.train.seq_len - len(self.pool.prompt_ids[i]))])
        return out

    def _on_policy(self, ctx: TrainContext, step: int, m: int) -> bool:
        return random.Random(derive_seed(ctx.seed, step, m, 3)).random() < self.options.lmbda

    def batches(self, ctx: TrainContext, step: int) -> list[dict]:
        o = self.options
        pad = ctx.tokenizer.pad_token_id

        def plan(t: int) -> list[R.SampleJob]:  # the on-policy micro-batches of step t
            return [R.SampleJob(m, [self.pool.prompt_ids[i] for i in idx], self.params, derive_seed(ctx.seed, t, m, 4),
                                o.backend)
                    for m, idx in self.pool.micro_batches(ctx.seed, t, self.per_step, ctx.train.grad_accum,
                                                          only=ctx.micro_range()) if self._on_policy(ctx, t, m)]

        rolled = dict(R.run_jobs(ctx, step, plan))
        out, gen_s = [], sum(ro.seconds for ro in rolled.values())
        for m, idx in self.pool.micro_batches(ctx.seed, step, self.per_step, ctx.train.grad_accum,
                                              only=ctx.micro_range()):
            if m in rolled:
                ro = rolled[m]
                b = ro.as_batch(pad)
                metrics = R.rollout_metrics(ro)
            else:
                comps = self._reference_completions(ctx, idx)
                b = R.sequence_batch([self.pool.prompt_ids[i] for i in idx], comps, pad)
                metrics = {"response_length": b["n_completion"] / len(comps), "truncated": 0.0}
            b["n_loss_tokens"] = b["n_completion"]
            b["metrics"] = {**metrics, "on_policy": float(m in rolled)}
            out.append(b)
        for b in out:
            b["metrics"]["gen_s"] = gen_s
        return out

    def loss(self, ctx: TrainContext, batch: dict) -> LossOutput:
        o = self.options
        s_logits, _ = R.completion_logits(ctx.model, batch, ctx.device, ctx.precision)
        t_logits = teacher_completion_logits(ctx.extras["teacher"], batch, ctx.device, ctx.precision)
        s_logits, t_logits = align_vocab(s_logits, t_logits)
        per_tok = generalized_jsd(s_logits, t_logits, o.beta, o.temperature)
        with torch.no_grad():
            rkl = reverse_kl(s_logits, t_logits).mean()
        metrics = {**batch.get("metrics", {}), "jsd": float(per_tok.detach().mean()), "reverse_kl": float(rkl)}
        return LossOutput(per_tok.sum(), int(per_tok.numel()), metrics)
