"""Loss functions of the self-distillation and multi-teacher objectives (SDPO, SRPO, RLSD, RLRT,
MOPD) as pure functions of tensors, like `rl_losses.py` for GRPO/OPD/GKD.

Shapes: `[n]` one entry per scored completion token, `[n, V]` logits at those tokens, `[N]` one
entry per sample. Every teacher quantity is detached here (sg[·] in the formulas): the teacher
is the same network re-scoring the student's own rollout and must not receive gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from arena.objectives.rl_losses import generalized_jsd


# -- SDPO: divergence to the self-teacher ------------------------------------------------------------

def _gjsd_from_logp(ls: torch.Tensor, lt: torch.Tensor, alpha: float) -> torch.Tensor:
    """Generalized JSD over the last axis of two log-probability tensors (SDPO's convention):

        α = 0: KL(T ‖ S)      α = 1: KL(S ‖ T)
        else:  M = (1−α)·S + α·T,   D = (1−α)·KL(S ‖ M) + α·KL(T ‖ M)
    """
    if alpha == 0:
        return (lt.exp() * (lt - ls)).sum(-1)
    if alpha == 1:
        return (ls.exp() * (ls - lt)).sum(-1)
    lm = torch.logsumexp(torch.stack([ls + math.log1p(-alpha), lt + math.log(alpha)]), dim=0)
    return (1 - alpha) * (ls.exp() * (ls - lm)).sum(-1) + alpha * (lt.exp() * (lt - lm)).sum(-1)


def _with_tail(logp_k: torch.Tensor) -> torch.Tensor:
    """Append the tail bucket log(1 − Σ_k p) to top-k log-probs [n, k] -> [n, k+1]."""
    log_s = torch.logsumexp(logp_k, dim=-1, keepdim=True).clamp(max=-1e-7)
    return torch.cat([logp_k, torch.log(-torch.expm1(log_s))], dim=-1)


def sdpo_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, alpha: float = 0.5,
                    top_k: int | None = 100, add_tail: bool = True) -> torch.Tensor:
    """Per-token divergence of SDPO (Hübotter et al. 2026, arXiv 2601.20802, Eq. 1; official code
    `compute_self_distillation_loss`) between the student and sg[teacher], [n]:

        full vocabulary:  D_α(π_S, π_T) over all V tokens (α as in `_gjsd_from_logp`)
        top-k:            K = the *student's* top-k tokens at each position; both distributions are
                          coarse-grained to K plus a tail bucket R (π(R) = 1 − Σ_K π) when
                          `add_tail`, else renormalised on K; D_α over those k(+1) categories

    α = 0.5 (JSD), top-k 100 with the tail is the official default. Gradients flow through the
    student's log-probs only (the top-k index choice is not differentiable, as in the reference).
    """
    ls = F.log_softmax(student_logits.float(), dim=-1)
    lt = F.log_softmax(teacher_logits.float(), dim=-1).detach()
    if top_k is None or top_k >= ls.shape[-1]:
        if alpha in (0, 1):
            return _gjsd_from_logp(ls, lt, alpha)
        return generalized_jsd(student_logits, lt, beta=alpha)
    idx = ls.detach().topk(top_k, dim=-1).indices
    ls_k, lt_k = ls.gather(-1, idx), lt.gather(-1, idx)
    if add_tail:
        ls_k, lt_k = _with_tail(ls_k), _with_tail(lt_k)
    else:
        ls_k = ls_k - ls_k.logsumexp(-1, keepdim=True)
        lt_k = lt_k - lt_k.logsumexp(-1, keepdim=True)
    return _gjsd_from_logp(ls_k, lt_k, alpha)


def is_weights(logp: torch.Tensor, old_logp: torch.Tensor, clip: float | None) -> torch.Tensor:
    """Token importance weights of SDPO's loss, sg[min(π_θ/π_old, clip)] (official `is_clip` = 2;
    the log-ratio is clamped to ±20 first, as in the reference). None: all ones."""
    if clip is None:
        return torch.ones_like(logp, dtype=torch.float32)
    return torch.exp((logp.float() - old_logp.float()).detach().clamp(-20.0, 20.0)).clamp(max=clip)


# -- SRPO: routing and teacher-entropy weights -------------------------------------------------------

def first_success_sibling(rewards: torch.Tensor, group_size: int, threshold: float,
                          exclude_self: bool = True) -> torch.Tensor:
    """Per sample, the index (into the flat [N] batch) of the first *other* sample of its group whose
    reward ≥ `threshold`, or −1 when there is none (SDPO's demonstration choice; with
    `exclude_self=False` a successful sample may be its own demonstration)."""
    r = rewards.float().view(-1, group_size)
    ok = r >= threshold
    out = torch.full((r.numel(),), -1, dtype=torch.long)
    for g in range(r.shape[0]):
        hits = ok[g].nonzero().flatten().tolist()
        for j in range(group_size):
            cand = [h for h in hits if h != j] if exclude_self else hits
            if cand:
                out[g * group_size + j] = g * group_size + cand[0]
    return out


def srpo_route(rewards: torch.Tensor, group_size: int, threshold: float = 0.5) -> torch.Tensor:
    """SRPO's sample routing (Li et al. 2026, arXiv 2604.02288, §3.1), [N] bool, True = SDPO:

        c_i = 1[r_i ≥ threshold],  m_i = 1[some sibling j ≠ i has r_j ≥ threshold]
        z_i^SDPO = (1 − c_i)·m_i        (failed samples that have a correct sibling)

    Everything else (correct samples, all-wrong groups) is trained by GRPO."""
    correct = rewards.float() >= threshold
    return (~correct) & (first_success_sibling(rewards, group_size, threshold) >= 0)


def teacher_entropy(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of the teacher over the full vocabulary, [n, V] -> [n] (detached):
    H_t = −Σ_v q_t(v) log q_t(v)."""
    lq = F.log_softmax(teacher_logits.float(), dim=-1).detach()
    return -(lq.exp() * lq).sum(-1)


def entropy_weights(teacher_logits: torch.Tensor, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """SRPO's dynamic weights (§3.2) at the routed tokens [n, V] -> (w [n], H_T [n]):

        H_t = −Σ_v q_t(v) log q_t(v)      (teacher entropy, full vocabulary)
        w̃_t = exp(−β·H_t),   w_t = w̃_t / mean_routed(w̃)   (mean 1 over the tokens given)

    Confident teacher positions weigh more. Detached. Empty input gives empty output."""
    h = teacher_entropy(teacher_logits)
    w = torch.exp(-beta * h)
    if w.numel():
        w = w / w.mean()
    return w, h


# -- RLSD / RLRT: token-reweighted advantages ----------------------------------------------------------

def reweighted_advantages(adv: torch.Tensor, gap: torch.Tensor, lam: float, eps_w: float,
                          gate: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token advantages of RLSD (arXiv 2604.03128, Eq. 15 / Alg. 1) and RLRT (arXiv 2605.10781), [n]:

        w_t = exp(sign(A)·sg(Δ_t))
        Â_t = A·[(1 − λ) + λ·clip(w_t, 1 − ε_w, 1 + ε_w)]      where `gate` (default: everywhere)
        Â_t = A                                                elsewhere

    RLSD: Δ_t = log P_T(y_t) − log P_S(y_t) (teacher conditioned on the reference answer); RLRT:
    Δ_t = log P_S(y_t) − log P_T(y_t) on correct rollouts only (gate = reward 1), so tokens the
    teacher would *not* have predicted are reinforced. A = 0 gives Â = 0; λ = 0 gives A (GRPO).
    Returns (Â, w) with w the unclipped weights (for logging their spread)."""
    a = adv.float()
    w = torch.exp(torch.sign(a) * gap.float().detach())
    scaled = a * ((1.0 - lam) + lam * w.clamp(1.0 - eps_w, 1.0 + eps_w))
    if gate is not None:
        scaled = torch.where(gate, scaled, a)
    return scaled, w


def linear_decay(start: float, step: int, steps: int | None) -> float:
    """λ of RLSD: `start` at step 0, linearly to 0 at `steps` (None: constant)."""
    if not steps:
        return start
    return start * max(0.0, 1.0 - step / steps)


# -- MOPD: multi-teacher sampled-token distillation ------------------------------------------------------

def masked_is_weights(logp: torch.Tensor, behaviour_logp: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """MiMo-V2-Flash's training/inference importance weights (arXiv 2601.02780, Eq. 7), [n]:

        w_t = sg[π_θ(y_t)/μ(y_t)]  if it lies in [low, high], else 0   (token dropped)"""
    ratio = torch.exp((logp.float() - behaviour_logp.float()).detach())
    return torch.where((ratio >= low) & (ratio <= high), ratio, torch.zeros_like(ratio))


def sampled_token_distill_loss(logp: torch.Tensor, teacher_logp: torch.Tensor,
                               weights: torch.Tensor | None = None, extra_adv: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token loss of sampled-token on-policy distillation (MOPD Eq. 8; OPD's sampled-token form):

        Â_t = sg[log π_T(y_t) − log π_θ(y_t)] (+ extra_adv_t, e.g. α·Â_ORM)
        ℓ_t = −w_t·Â_t·log π_θ(y_t)

    Its gradient is w_t·(log π_θ − log π_T)·∇log π_θ: the policy-gradient estimate of the reverse
    KL(π_θ ‖ π_T) from the sampled token (Agarwal et al. 2024; Thinking Machines 2025)."""
    lp = logp.float()
    adv = (teacher_logp.float() - lp).detach()
    if extra_adv is not None:
        adv = adv + extra_adv.float()
    w = torch.ones_like(lp) if weights is None else weights.float()
    return -(w * adv * lp)
