"""On-policy distillation (OPD): the student samples, the teacher scores every student token.

Agarwal et al. 2024 (GKD with λ=1, β=1); Gu et al. 2024 (MiniLLM); Thinking Machines, "On-Policy
Distillation" (2025). Each step the student samples completions of the target's prompts
(`arena.rollouts`), the teacher (loaded once in `prepare`, fp32, frozen) runs over the same tokens,
and the loss is the per-token reverse KL on the student's own trajectories,

    L = Σ_t KL(π_S(·|x, y_<t) ‖ π_T(·|x, y_<t)) / Σ_i |y_i|,

exact over the full vocabulary, or over the teacher's top-k plus a tail bucket when `top_k` is set
(only the teacher's top-k log-probs are transported, as from a remote teacher server). The
teacher's log-probs act as a dense per-token reward: the gradient of the sampled-token form
E[log π_S − log π_T] is the policy gradient with reward log π_T − log π_S; the exact per-position
KL removes that estimator's variance at every visited position.

Logged per step: reverse KL (full vocabulary), top-k overlap of teacher and student, the share of
teacher mass on the shared top-k set and the teacher's top-k mass (see `arena opd-check`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Optional

import torch

from arena.components import OBJECTIVES
from arena.errors import ConfigError
from arena.objectives.base import LossOutput, Objective, TrainContext
from arena.objectives.rl_losses import reverse_kl, teacher_topk, token_logprobs, topk_agreement, topk_reverse_kl
from arena.objectives.sd_losses import sampled_token_distill_loss
from arena.schema import added_field
from arena.objectives.teacher import align_vocab, prepare_teacher, teacher_completion_logits, teacher_scores
from arena.rewards import resolve_reward
from arena import rollouts as R
from arena.generation.seeds import derive_seed


def require_teacher(options) -> None:
    if not options.teacher:
        raise ConfigError("objective.teacher", options.teacher,
                          "required: a model name/folder or an arena run folder sharing the student's tokenizer")


def prepare_distillation(obj: Objective, ctx: TrainContext) -> dict:
    """Shared by OPD and GKD: load the teacher into ctx.extras, build the prompt pool and the
    sampling parameters on `obj`; returns the record's data stats."""
    o = obj.options
    teacher = prepare_teacher(ctx, o.teacher)
    obj.pool = R.prompt_pool_for(ctx, o.max_new_tokens, need_answer=False)
    obj.per_step = R.prompts_per_step(o.prompts_per_step, ctx.train)
    obj.params = R.SamplingParams(o.temperature, o.top_p, o.max_new_tokens, o.n_samples)
    obj.monitor = monitor_reward(ctx)
    return {"examples": len(obj.pool), "dropped": obj.pool.n_dropped, "prompts_per_step": obj.per_step,
            "teacher": teacher}


def monitor_reward(ctx):
    """The target's default reward, logged (never trained on) by distillation objectives so their
    reward curves sit beside GRPO's; None when the target has none."""
    target = getattr(ctx.target, "name", None)
    return resolve_reward("auto", target)[1] if getattr(ctx.target, "default_reward", None) else None


def reward_metrics(fn, texts: list[str], examples) -> dict:
    if fn is None or any(e.answer is None for e in examples):
        return {}
    r = [fn(t, e.answer) for t, e in zip(texts, examples)]
    return {"reward_mean": sum(r) / len(r), "pass_rate": sum(x >= 1.0 for x in r) / len(r)}


@OBJECTIVES.register("opd")
class OPD(Objective):
    name = "opd"
    description = "on-policy distillation: student samples, per-token reverse KL to a teacher (same tokenizer)"
    needs_rollouts = True

    @dataclass
    class Options:
        teacher: Optional[str] = None  # model name / folder / hub id, or an arena run folder (required)
        n_samples: int = 1  # completions per prompt
        prompts_per_step: Optional[int] = None  # null: train.batch_size x train.grad_accum
        temperature: float = 1.0  # sampling temperature (the KL is taken at temperature 1)
        top_p: float = 1.0
        max_new_tokens: int = 64
        top_k: Optional[int] = None  # null: full-vocabulary reverse KL; k: teacher top-k + tail bucket
        diag_k: int = 8  # k of the logged overlap / mass-share diagnostics
        # exact: the per-position KL above; sampled-token: its estimate from the sampled token,
        # ℓ_t = −sg(log π_T(y_t) − log π_S(y_t))·log π_S(y_t) (MOPD with one teacher; Tinker's OPD)
        estimator: Literal["exact", "sampled-token"] = added_field("exact")
        backend: str = "auto"  # generation engine for rollouts (arena/generation/engine.py)

        def __post_init__(self):
            if self.n_samples <= 0:
                raise ConfigError("n_samples", self.n_samples, "must be a positive integer")
            if self.top_k is not None and self.top_k <= 0:
                raise ConfigError("top_k", self.top_k, "must be a positive integer or null (full vocabulary)")
            if self.estimator == "sampled-token" and self.top_k is not None:
                raise ConfigError("top_k", self.top_k, "must be null with estimator: sampled-token (it reads the sampled token only)")
            if self.diag_k <= 0:
                raise ConfigError("diag_k", self.diag_k, "must be a positive integer")
            R.check_sampling_options(self)

    @classmethod
    def validate_options(cls, options) -> None:
        require_teacher(options)

    def prepare(self, ctx: TrainContext) -> dict:
        stats = prepare_distillation(self, ctx)
        return {**stats, "samples_per_step": self.per_step * self.options.n_samples}

    def batches(self, ctx: TrainContext, step: int) -> list[dict]:
        o = self.options
        out, t0 = [], time.perf_counter()
        rolled = R.step_rollouts(ctx, self.pool, self.per_step, self.params, step, 2, o.backend)
        gen_s = sum(ro.seconds for _, ro, _ in rolled)
        for idx, ro, b in rolled:
            b["n_loss_tokens"] = b["n_completion"]
            if ro.meta.get("staleness"):  # behaviour log-probs for the stale batch's IS weights
                b["old_logprobs"], b["staleness"] = ro.logprobs[ro.completion_mask], ro.meta["staleness"]
            b["metrics"] = {**R.rollout_metrics(ro), **reward_metrics(
                self.monitor, ro.texts, [self.pool.examples[idx[g]] for g in ro.group.tolist()])}
            out.append(b)
        for b in out:
            b["metrics"]["gen_s"] = gen_s
            b["metrics"]["rollout_s"] = time.perf_counter() - t0
        return out

    def loss(self, ctx: TrainContext, batch: dict) -> LossOutput:
        o = self.options
        s_logits, tok = R.completion_logits(ctx.model, batch, ctx.device, ctx.precision)
        scores = teacher_scores(ctx.extras["teacher"], batch, ctx.device, ctx.precision)
        if scores.logits is None:  # a teacher service shipping top-k (services.teacher.transport: topk)
            return self._topk_loss(ctx, batch, s_logits, tok, scores)
        s_logits, t_logits = align_vocab(s_logits, scores.logits)
        full = reverse_kl(s_logits, t_logits)
        if o.estimator == "sampled-token":
            per_tok = sampled_token_distill_loss(token_logprobs(s_logits, tok), token_logprobs(t_logits, tok),
                                                 self.stale_weights(batch, s_logits, tok))
        elif o.top_k is None:
            per_tok = full
        else:
            per_tok = topk_reverse_kl(s_logits, *teacher_topk(t_logits, o.top_k))
        agree = topk_agreement(s_logits.detach(), t_logits, o.diag_k)
        metrics = {**batch.get("metrics", {}), "reverse_kl": float(full.detach().mean()),
                   **{k: float(v.mean()) for k, v in agree.items()}}
        if o.top_k is not None:
            metrics["reverse_kl_topk"] = float(per_tok.detach().mean())
        return LossOutput(per_tok.sum(), int(per_tok.numel()), metrics)

    def _topk_loss(self, ctx, batch: dict, s_logits, tok, scores) -> LossOutput:
        """The same loss from the transported top-k: the top-k + tail-bucket reverse KL (exact at
        k = V), or the sampled-token estimator from the shipped log π_T(y_t)."""
        o = self.options
        idx = scores.topk_idx.long().to(s_logits.device)
        topk = topk_reverse_kl(s_logits, scores.topk_logp.to(s_logits.device), idx, scores.tail_logp.to(s_logits.device))
        if o.estimator == "sampled-token":
            per_tok = sampled_token_distill_loss(token_logprobs(s_logits, tok), scores.sampled_logp.to(s_logits.device),
                                                 self.stale_weights(batch, s_logits, tok))
        else:
            per_tok = topk
        with torch.no_grad():  # overlap / mass diagnostics from the shipped top-k (diag_k <= k)
            k = min(o.diag_k, idx.shape[-1])
            s_top = s_logits.detach().topk(k, dim=-1).indices
            shared = (s_top.unsqueeze(-1) == idx[:, :k].unsqueeze(-2)).any(-1)
            t_prob = scores.topk_logp[:, :k].to(s_logits.device).exp()
            on_shared = (idx[:, :k].unsqueeze(-1) == s_top.unsqueeze(-2)).any(-1)
        metrics = {**batch.get("metrics", {}), "reverse_kl_topk": float(topk.detach().mean()),
                   "overlap": float(shared.float().sum(-1).mean() / k), "teacher_mass": float(t_prob.sum(-1).mean()),
                   "shared_mass": float((t_prob * on_shared).sum(-1).mean())}
        return LossOutput(per_tok.sum(), int(per_tok.numel()), metrics)

    @staticmethod
    def stale_weights(batch: dict, s_logits, tok):
        """Truncated importance weights min(π_θ(y_t)/μ(y_t), 2) for rollouts a worker sampled with
        weights `staleness` > 0 steps old (μ: the recorded behaviour log-probs), as the sampled-token
        estimator is a policy gradient; None (no weighting) for on-policy batches, so a synchronous
        run is unchanged. The cap is SDPO's is_clip."""
        if not batch.get("staleness") or "old_logprobs" not in batch:
            return None
        with torch.no_grad():
            ratio = (token_logprobs(s_logits, tok) - batch["old_logprobs"].to(s_logits.device)).exp()
        return ratio.clamp_max(2.0)


@torch.no_grad()
def opd_diagnostics(student, teacher, tokenizer, prompts: list[str], *, top_k: int = 8, max_new_tokens: int = 64,
                    n_buckets: int = 8, temperature: float = 1.0, top_p: float = 1.0, n_samples: int = 1,
                    seed: int = 0, device="cpu", precision: str = "fp32", backend: str = "auto",
                    batch_size: int = 16) -> dict:
    """Teacher-student agreement on the student's own rollouts (what OPD trains on).

    Per completion token: top-k overlap |topk_T ∩ topk_S|/k, teacher mass on the shared set,
    teacher top-k mass and the full-vocabulary reverse KL(π_S ‖ π_T); overall means and the
    reverse KL / overlap by completion position in `n_buckets` equal-width buckets of
    [0, max_new_tokens). The student runs in eval mode (no dropout). Deterministic in `seed`.
    """
    device = torch.device(device)
    n_buckets = max(1, min(n_buckets, max_new_tokens))
    params = R.SamplingParams(temperature, top_p, max_new_tokens, n_samples)
    prompt_ids = R.encode_prompts(tokenizer, prompts)
    cols = {k: [] for k in ("reverse_kl", "overlap", "shared_mass", "teacher_mass", "position")}
    lengths, finished = [], []
    was = student.training
    student.eval()
    try:
        for c, s in enumerate(range(0, len(prompt_ids), batch_size)):
            ro = R.sample(student, tokenizer, prompt_ids[s:s + batch_size], params, derive_seed(seed, c, 5),
                          device, precision, backend)
            b = ro.as_batch(tokenizer.pad_token_id)
            s_logits, _ = R.completion_logits(student, b, device, precision)
            t_logits = teacher_completion_logits(teacher, b, device, precision)
            s_logits, t_logits = align_vocab(s_logits.float(), t_logits)
            agree = topk_agreement(s_logits, t_logits, top_k)
            cols["reverse_kl"].append(reverse_kl(s_logits, t_logits).cpu())
            for k in ("overlap", "shared_mass", "teacher_mass"):
                cols[k].append(agree[k].cpu())
            cols["position"].append(b["completion_mask"].nonzero()[:, 1])
            lengths += ro.lengths.tolist()
            finished += ro.finished.tolist()
    finally:
        student.train(was)
    v = {k: torch.cat(x) for k, x in cols.items()}
    width = max_new_tokens / n_buckets
    bucket = (v["position"].float() / width).floor().long().clamp_max(n_buckets - 1)
    buckets = []
    for j in range(n_buckets):
        sel = bucket == j
        lo, hi = int(round(j * width)), int(round((j + 1) * width))
        row = {"positions": f"{lo}-{hi - 1}", "tokens": int(sel.sum())}
        for k in ("reverse_kl", "overlap", "shared_mass"):
            row[k] = float(v[k][sel].mean()) if sel.any() else None
        buckets.append(row)
    n = len(lengths)
    return {"top_k": top_k, "prompts": len(prompts), "samples": n, "tokens": int(v["reverse_kl"].numel()),
            "response_length": sum(lengths) / max(1, n), "finished": sum(finished) / max(1, n),
            "reverse_kl": float(v["reverse_kl"].mean()), "overlap": float(v["overlap"].mean()),
            "shared_mass": float(v["shared_mass"].mean()), "teacher_mass": float(v["teacher_mass"].mean()),
            "by_position": buckets}
