"""Losses of SDPO / SRPO / RLSD / RLRT / MOPD against values derived by hand
(arena/objectives/sd_losses.py), on 2–4-token vocabularies."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from arena.objectives.rl_losses import reverse_kl
from arena.objectives.sd_losses import (
    entropy_weights,
    first_success_sibling,
    is_weights,
    linear_decay,
    masked_is_weights,
    reweighted_advantages,
    sampled_token_distill_loss,
    sdpo_divergence,
    srpo_route,
)

PS = [0.5, 0.3, 0.15, 0.05]  # student
PT = [0.2, 0.4, 0.3, 0.1]  # teacher


def lg(p):
    return torch.log(torch.tensor([p], dtype=torch.float64))


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def test_sdpo_full_vocab_end_points_and_jsd_by_hand():
    assert float(sdpo_divergence(lg(PS), lg(PT), alpha=1.0, top_k=None)) == pytest.approx(kl(PS, PT), rel=1e-6)
    assert float(sdpo_divergence(lg(PS), lg(PT), alpha=0.0, top_k=None)) == pytest.approx(kl(PT, PS), rel=1e-6)
    a = 0.3
    m = [(1 - a) * s + a * t for s, t in zip(PS, PT)]
    want = (1 - a) * kl(PS, m) + a * kl(PT, m)
    assert float(sdpo_divergence(lg(PS), lg(PT), alpha=a, top_k=None)) == pytest.approx(want, rel=1e-5)


def test_sdpo_top_k_uses_the_students_top_k_and_a_tail_bucket():
    # student's top-2 = tokens {0, 1}; tails: student 0.2, teacher 0.4 (teacher's own top-2 is {1, 2})
    s3, t3 = [0.5, 0.3, 0.2], [0.2, 0.4, 0.4]
    got = float(sdpo_divergence(lg(PS), lg(PT), alpha=1.0, top_k=2, add_tail=True))
    assert got == pytest.approx(kl(s3, t3), rel=1e-5)
    got = float(sdpo_divergence(lg(PS), lg(PT), alpha=0.5, top_k=2, add_tail=True))
    m = [(s + t) / 2 for s, t in zip(s3, t3)]
    assert got == pytest.approx(0.5 * kl(s3, m) + 0.5 * kl(t3, m), rel=1e-5)
    # renormalised on the two tokens
    got = float(sdpo_divergence(lg(PS), lg(PT), alpha=1.0, top_k=2, add_tail=False))
    assert got == pytest.approx(kl([0.625, 0.375], [1 / 3, 2 / 3]), rel=1e-5)
    # k = V is the full divergence
    assert float(sdpo_divergence(lg(PS), lg(PT), alpha=1.0, top_k=4)) == pytest.approx(kl(PS, PT), rel=1e-6)


def test_sdpo_matches_kl_div_formulation_and_gives_the_teacher_no_gradient():
    """Independent route: the reference's F.kl_div(input, target, log_target=True) = KL(target‖input)."""
    torch.manual_seed(0)
    s = torch.randn(5, 7, requires_grad=True)
    t = torch.randn(5, 7, requires_grad=True)
    ls, lt = F.log_softmax(s, -1), F.log_softmax(t, -1)
    a = 0.5
    lm = torch.logsumexp(torch.stack([ls + math.log(1 - a), lt + math.log(a)]), 0)
    want = (torch.lerp(F.kl_div(lm, ls, reduction="none", log_target=True),
                       F.kl_div(lm, lt, reduction="none", log_target=True), a)).sum(-1)
    got = sdpo_divergence(s, t, alpha=a, top_k=None)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    got.sum().backward()
    assert t.grad is None and s.grad is not None and s.grad.abs().sum() > 0


def test_sdpo_against_itself_is_zero_with_zero_gradient():
    s = torch.randn(3, 6, requires_grad=True)
    d = sdpo_divergence(s, s.detach().clone(), alpha=1.0, top_k=None)
    d.sum().backward()
    assert float(d.detach().abs().max()) < 1e-6 and float(s.grad.abs().max()) < 1e-6


def test_is_weights_cap_and_no_gradient():
    logp = torch.tensor([0.5, 1.0, -0.3], requires_grad=True)
    w = is_weights(logp, torch.zeros(3), clip=2.0)
    torch.testing.assert_close(w, torch.tensor([math.exp(0.5), 2.0, math.exp(-0.3)]))
    assert not w.requires_grad
    assert torch.equal(is_weights(logp, torch.zeros(3), None), torch.ones(3))


def test_first_success_sibling_and_srpo_routing_by_hand():
    r = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    assert first_success_sibling(r, 4, 0.5).tolist() == [2, 0, 0, 0, -1, -1, -1, -1, -1, 8, 8, 8]
    assert first_success_sibling(r, 4, 0.5, exclude_self=False).tolist()[:4] == [0, 0, 0, 0]
    # a lone success has no demonstration; its failed siblings are routed to SDPO; all-wrong -> GRPO
    assert srpo_route(r, 4).tolist() == [False, True, False, True] + [False] * 4 + [False, True, True, True]
    assert srpo_route(torch.ones(4), 4).tolist() == [False] * 4


def test_entropy_weights_by_hand():
    t = torch.tensor([[0.0, 0.0], [0.0, -200.0]])  # H = ln 2 and ~0
    w, h = entropy_weights(t, beta=1.0)
    torch.testing.assert_close(h, torch.tensor([math.log(2), 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(w, torch.tensor([2 / 3, 4 / 3]), atol=1e-6, rtol=0)
    assert float(w.mean()) == pytest.approx(1.0)
    w0, _ = entropy_weights(t, beta=0.0)
    assert torch.equal(w0, torch.ones(2))


def test_reweighted_advantages_by_hand_and_reductions():
    adv = torch.tensor([1.0, -1.0, 0.0, 2.0])
    gap = torch.tensor([math.log(1.5), math.log(1.5), 5.0, math.log(1.1)])
    got, w = reweighted_advantages(adv, gap, lam=0.5, eps_w=0.2)
    # w = [1.5, 1/1.5, 1, 1.1] -> clipped [1.2, 0.8, 1, 1.1]
    torch.testing.assert_close(w, torch.tensor([1.5, 1 / 1.5, 1.0, 1.1]))
    torch.testing.assert_close(got, torch.tensor([1.1, -0.9, 0.0, 2 * (0.5 + 0.55)]))
    same, _ = reweighted_advantages(adv, gap, lam=0.0, eps_w=0.2)
    assert torch.equal(same, adv)  # λ = 0: GRPO
    gated, _ = reweighted_advantages(adv, gap, lam=0.5, eps_w=0.2, gate=torch.tensor([True, False, False, False]))
    torch.testing.assert_close(gated, torch.tensor([1.1, -1.0, 0.0, 2.0]))


def test_linear_decay():
    assert [linear_decay(0.5, s, 50) for s in (0, 25, 50, 80)] == [0.5, 0.25, 0.0, 0.0]
    assert linear_decay(0.5, 1000, None) == 0.5


def test_masked_is_weights_by_hand():
    old = torch.zeros(4)
    logp = torch.log(torch.tensor([1.0, 3.0, 0.4, 1.9]))
    torch.testing.assert_close(masked_is_weights(logp, old, 0.5, 2.0), torch.tensor([1.0, 0.0, 0.0, 1.9]))


def test_sampled_token_loss_value_and_gradient_is_the_reverse_kl_policy_gradient():
    torch.manual_seed(1)
    s = torch.randn(6, 5, requires_grad=True)
    t = torch.randn(6, 5)
    tok = torch.randint(0, 5, (6,))
    ls = F.log_softmax(s, -1).gather(-1, tok[:, None])[:, 0]
    lt = F.log_softmax(t, -1).gather(-1, tok[:, None])[:, 0]
    loss = sampled_token_distill_loss(ls, lt)
    torch.testing.assert_close(loss, -(lt - ls.detach()) * ls)
    loss.sum().backward()
    g1 = s.grad.clone()
    # the gradient of Σ (log π_S − log π_T)·log π_S with the first factor frozen
    s.grad = None
    ls2 = F.log_softmax(s, -1).gather(-1, tok[:, None])[:, 0]
    ((ls2.detach() - lt) * ls2).sum().backward()
    torch.testing.assert_close(g1, s.grad)
    # expected over the student's own distribution at one position it is the reverse KL's gradient
    s1 = torch.randn(1, 4, requires_grad=True)
    t1 = torch.randn(1, 4)
    p = F.softmax(s1, -1).detach()[0]
    est = sum(p[v] * sampled_token_distill_loss(F.log_softmax(s1, -1)[0, v], F.log_softmax(t1, -1)[0, v]) for v in range(4))
    ge = torch.autograd.grad(est, s1)[0]
    gk = torch.autograd.grad(reverse_kl(s1, t1).sum(), s1)[0]
    torch.testing.assert_close(ge, gk, rtol=1e-5, atol=1e-6)
