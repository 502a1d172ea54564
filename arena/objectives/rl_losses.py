"""Loss functions of the rollout objectives (GRPO, OPD, GKD) as pure functions of tensors.

No models, no sampling, no optimizers: every function here maps tensors to tensors, so its tests
derive expected values by hand. Log-probabilities and KLs are computed in fp32 whatever the
input dtype. Shapes: `[n]` = one entry per scored (completion) token, `[n, V]` = logits at those
tokens, `[N, T]` = padded per-sequence layout with a boolean mask.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

LossAgg = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"]


# -- GRPO -------------------------------------------------------------------------------------------

def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Group-relative advantages of GRPO (Shao et al. 2024, DeepSeekMath, eq. 3 with outcome rewards).

        A_i = (r_i − mean_g(r)) / (std_g(r) + eps)     (scale=True)
        A_i =  r_i − mean_g(r)                         (scale=False, Dr. GRPO, Liu et al. 2025)

    `rewards` [G·n] holds G groups of `group_size` consecutive samples of one prompt. std is the
    *population* standard deviation (divide by n): rewards [1, 0, 0, 1] give exactly ±1 (TRL uses
    the sample std, which gives ±0.866 there). A group whose rewards are all equal gets A = 0.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.float().view(-1, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (r.std(dim=1, unbiased=False, keepdim=True) + eps)
    return centred.reshape(-1)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each sampled token under the temperature-scaled policy, [n, V] x [n] -> [n]:

        log π(y_t) = log softmax(z_t / T)[y_t]

    (fp32; what the rollout engines record as behaviour log-probs, recomputed here with gradient)."""
    return -F.cross_entropy(logits.float() / temperature, targets, reduction="none")


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                        clip_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO/GRPO clipped surrogate, as a loss to minimise, and where the clip is active.

        ρ = exp(log π_θ − log π_old)
        ℓ = −min(ρ·A, clip(ρ, 1−ε, 1+ε)·A)

    Returns (ℓ [n], clipped [n] bool). A token is "clipped" when the clipped branch is the smaller
    one and differs (ρ > 1+ε with A > 0, or ρ < 1−ε with A < 0): its gradient is zero. On-policy
    with one update per batch ρ = 1 and ℓ = −A with gradient −A·∇log π (REINFORCE with a baseline).
    """
    ratio = torch.exp(logp.float() - old_logp.float())
    adv = advantages.float()
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv
    loss = -torch.minimum(unclipped, clipped)
    active = ((ratio > 1.0 + clip_eps) & (adv > 0)) | ((ratio < 1.0 - clip_eps) & (adv < 0))
    return loss, active


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(π_θ ‖ π_ref) estimator of GRPO (Schulman's k3; DeepSeekMath eq. 4):

        KL ≈ exp(log π_ref − log π_θ) − (log π_ref − log π_θ) − 1   (≥ 0, unbiased under π_θ samples)
    """
    d = ref_logp.float() - logp.float()
    return torch.exp(d) - d - 1.0


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: LossAgg) -> tuple[torch.Tensor, int]:
    """Sum of per-token losses and the number of units the caller divides it by.

    `values`, `mask` are [N, T]. With the units of all micro-batches of a step summed, sum/units is:
      token-mean           Σ_i Σ_t ℓ_it / Σ_i |o_i|        (DAPO; every token weighs the same)
      seq-mean-token-sum   Σ_i Σ_t ℓ_it / N                (Dr. GRPO without the constant; long
                                                            answers weigh more)
      seq-mean-token-mean  Σ_i (Σ_t ℓ_it / |o_i|) / N      (the original GRPO)
    Sequences with no scored token contribute nothing and count no unit under seq-mean modes.
    """
    m = mask.to(values.dtype)
    if mode == "token-mean":
        return (values * m).sum(), int(mask.sum())
    lengths = m.sum(dim=1)
    has = lengths > 0
    per_seq = (values * m).sum(dim=1)
    if mode == "seq-mean-token-sum":
        return per_seq[has].sum(), int(has.sum())
    if mode == "seq-mean-token-mean":
        return (per_seq[has] / lengths[has]).sum(), int(has.sum())
    raise ValueError(f"unknown loss aggregation {mode!r}")


def scatter_tokens(flat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[n] values of the True positions of `mask` (row-major) -> [N, T] with zeros elsewhere (keeps grad)."""
    out = flat.new_zeros(mask.shape)
    out[mask] = flat
    return out


# -- distillation ----------------------------------------------------------------------------------

def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-token reverse KL over the full vocabulary, [n, V] x [n, V] -> [n]:

        KL(π_S ‖ π_T) = Σ_v π_S(v) (log π_S(v) − log π_T(v))

    The on-policy distillation objective (Agarwal et al. 2024 with λ=1, β=1; Thinking Machines
    "On-Policy Distillation", 2025): mode-seeking, computed exactly per position rather than
    estimated from the sampled token, so its gradient has no sampling variance at that position.
    """
    ls = F.log_softmax(student_logits.float(), dim=-1)
    lt = F.log_softmax(teacher_logits.float(), dim=-1)
    return (ls.exp() * (ls - lt)).sum(-1)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-token forward KL(π_T ‖ π_S) = Σ_v π_T(v) (log π_T(v) − log π_S(v)) (classic KD; mean-seeking)."""
    return reverse_kl(teacher_logits, student_logits)


def teacher_topk(teacher_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a top-k teacher transports per position: its top-k log-probs, their token ids, and the
    log of the remaining mass log π_T(R) = logsumexp over the other tokens (exact in log space; the
    difference 1 − Σ_K π_T rounds to 0 in fp32 for a confident teacher)."""
    lt = F.log_softmax(teacher_logits.float(), dim=-1)
    k = min(k, lt.shape[-1])
    val, idx = lt.topk(k, dim=-1)
    tail = lt.scatter(-1, idx, float("-inf")).logsumexp(-1) if k < lt.shape[-1] else torch.full_like(val[..., 0], float("-inf"))
    return val, idx, tail


def topk_reverse_kl(student_logits: torch.Tensor, teacher_topk_logp: torch.Tensor, teacher_topk_idx: torch.Tensor,
                    teacher_tail_logp: torch.Tensor | None = None) -> torch.Tensor:
    """Reverse KL when only the teacher's top-k log-probs are transported, [n] per token.

    The vocabulary is coarse-grained into the teacher's top-k tokens K plus one tail bucket
    R = V \\ K, with π(R) = 1 − Σ_{v∈K} π(v) for both models:

        KL_k = Σ_{v∈K} π_S(v) log(π_S(v)/π_T(v)) + π_S(R) log(π_S(R)/π_T(R))

    By the data-processing inequality 0 ≤ KL_k ≤ KL(π_S ‖ π_T); it is exact when k = V and tight
    when both models put little mass outside K. log π_T(R) is `teacher_tail_logp` when transported
    (see `teacher_topk`), else log(1 − Σ_K π_T) (imprecise when that is below ~1e-6). The student's
    log π_S(R) is a logsumexp over its full logits. Gradients flow through π_S on K and π_S(R).
    """
    ls = F.log_softmax(student_logits.float(), dim=-1)
    ls_k = ls.gather(-1, teacher_topk_idx)
    lt_k = teacher_topk_logp.float()
    head = (ls_k.exp() * (ls_k - lt_k)).sum(-1)
    if teacher_topk_idx.shape[-1] >= ls.shape[-1]:  # k = V: no tail bucket
        return head
    ls_r = ls.scatter(-1, teacher_topk_idx, float("-inf")).logsumexp(-1)
    if teacher_tail_logp is None:
        teacher_tail_logp = torch.log1p(-lt_k.exp().sum(-1).clamp_max(1.0 - 1e-7))
    lt_r = teacher_tail_logp.float().clamp_min(math.log(torch.finfo(torch.float32).tiny))
    return head + ls_r.exp() * (ls_r - lt_r)


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float,
                    temperature: float = 1.0) -> torch.Tensor:
    """Per-token generalized Jensen-Shannon divergence of GKD (Agarwal et al. 2024, eq. 1), [n]:

        M     = β·π_T + (1 − β)·π_S          (both softmaxes at `temperature`)
        JSD_β = β·KL(π_T ‖ M) + (1 − β)·KL(π_S ‖ M)

    with TRL's `GKDTrainer.generalized_jsd_loss` convention at the end points: β = 0 is the forward
    KL(π_T ‖ π_S) and β = 1 the reverse KL(π_S ‖ π_T) exactly (the formula itself vanishes there).
    """
    s = student_logits.float() / temperature
    t = teacher_logits.float() / temperature
    if beta == 0:
        return forward_kl(s, t)
    if beta == 1:
        return reverse_kl(s, t)
    ls, lt = F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1)
    lm = torch.logsumexp(torch.stack([ls + math.log1p(-beta), lt + math.log(beta)]), dim=0)
    kl_t = (lt.exp() * (lt - lm)).sum(-1)
    kl_s = (ls.exp() * (ls - lm)).sum(-1)
    return beta * kl_t + (1.0 - beta) * kl_s


@torch.no_grad()
def topk_agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Per-token agreement of teacher and student top-k sets, [n] each (OPD diagnostics):

        overlap       |topk_T ∩ topk_S| / k
        shared_mass   Σ_{v ∈ topk_T ∩ topk_S} π_T(v)   (teacher mass the student also ranks top-k)
        teacher_mass  Σ_{v ∈ topk_T} π_T(v)           (how much a top-k transport keeps)
    """
    k = min(k, student_logits.shape[-1])
    lt = F.log_softmax(teacher_logits.float(), dim=-1)
    t_val, t_idx = lt.topk(k, dim=-1)
    s_idx = student_logits.float().topk(k, dim=-1).indices
    shared = (t_idx.unsqueeze(-1) == s_idx.unsqueeze(-2)).any(-1)  # [n, k] over the teacher's top-k
    p_t = t_val.exp()
    return {"overlap": shared.float().sum(-1) / k, "shared_mass": (p_t * shared).sum(-1), "teacher_mass": p_t.sum(-1)}
