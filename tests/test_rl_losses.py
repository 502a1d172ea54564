"""Loss functions of GRPO / OPD / GKD against values derived by hand (arena/objectives/rl_losses.py)."""

from __future__ import annotations

import math

import pytest
import torch

from arena.objectives.rl_losses import (
    aggregate,
    clipped_policy_loss,
    forward_kl,
    generalized_jsd,
    group_advantages,
    k3_kl,
    reverse_kl,
    scatter_tokens,
    teacher_topk,
    topk_agreement,
    topk_reverse_kl,
)

LN2 = math.log(2.0)
# Two 3-class distributions used throughout: student S, teacher T (logits = log-probs).
PS = [0.7, 0.2, 0.1]
PT = [0.4, 0.4, 0.2]


def logits(p):
    return torch.log(torch.tensor([p], dtype=torch.float64))


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


# -- GRPO advantages ---------------------------------------------------------------------------

def test_group_advantage_hand_group_is_plus_minus_one():
    # mean 0.5; population std sqrt(((0.5)^2 * 4) / 4) = 0.5 -> (1 - 0.5) / 0.5 = +1, (0 - 0.5) / 0.5 = -1.
    # (The sample std, sqrt(1/3) = 0.577, would give ±0.866: we use the population std.)
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=4)
    assert torch.allclose(adv, torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5)


def test_group_advantage_unscaled_groups_and_constant_group():
    r = torch.tensor([1.0, 0.0, 3.0, 3.0])  # two groups of two
    assert torch.allclose(group_advantages(r, 2), torch.tensor([1.0, -1.0, 0.0, 0.0]), atol=1e-5)
    assert torch.allclose(group_advantages(r, 2, scale=False), torch.tensor([0.5, -0.5, 0.0, 0.0]))
    # group of 3 with rewards 0, 1, 2: mean 1, population std sqrt(2/3)
    adv = group_advantages(torch.tensor([0.0, 1.0, 2.0]), 3)
    assert torch.allclose(adv, torch.tensor([-1, 0, 1]) / math.sqrt(2 / 3), atol=1e-5)
    with pytest.raises(ValueError):
        group_advantages(torch.ones(5), 2)


# -- clipped surrogate -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "ratio,adv,loss,clipped,grad",
    [
        (1.0, 2.0, -2.0, False, -2.0),  # on-policy: ℓ = -A, dℓ/dlogπ = -ρA
        (1.5, 1.0, -1.2, True, 0.0),  # min(1.5, 1.2) = 1.2: clipped, no gradient
        (1.5, -1.0, 1.5, False, 1.5),  # min(-1.5, -1.2) = -1.5: the unclipped branch
        (0.5, -1.0, 0.8, True, 0.0),  # min(-0.5, -0.8) = -0.8: clipped
        (0.5, 1.0, -0.5, False, -0.5),  # min(0.5, 0.8) = 0.5: unclipped
        (1.1, -1.0, 1.1, False, 1.1),  # inside [0.8, 1.2]: never clipped
    ],
)
def test_clipped_policy_loss_cases(ratio, adv, loss, clipped, grad):
    old = torch.tensor([-1.0])
    logp = (old + math.log(ratio)).requires_grad_(True)
    out, active = clipped_policy_loss(logp, old, torch.tensor([adv]), clip_eps=0.2)
    assert out.item() == pytest.approx(loss, abs=1e-6)
    assert bool(active.item()) is clipped
    out.sum().backward()
    assert logp.grad.item() == pytest.approx(grad, abs=1e-6)


def test_k3_kl_hand_values():
    # log π = log 0.5, log π_ref = log 0.25: d = -ln 2, exp(d) - d - 1 = 0.5 + ln 2 - 1
    got = k3_kl(torch.tensor([math.log(0.5), -1.0]), torch.tensor([math.log(0.25), -1.0]))
    assert got[0].item() == pytest.approx(0.5 + LN2 - 1.0, abs=1e-6)
    assert got[1].item() == 0.0


def test_aggregation_modes_by_hand():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    s, n = aggregate(values, mask, "token-mean")
    assert (s.item(), n) == (10.0, 4)  # (1+2+3+4) / 4 tokens = 2.5
    s, n = aggregate(values, mask, "seq-mean-token-sum")
    assert (s.item(), n) == (10.0, 2)  # (6 + 4) / 2 sequences = 5
    s, n = aggregate(values, mask, "seq-mean-token-mean")
    assert (s.item(), n) == (6.0, 2)  # (6/3 + 4/1) / 2 = 3
    # a masked-out value never counts; an empty row adds no unit
    values[1, 2] = 100.0
    mask = torch.tensor([[True, True, True], [False, False, False]])
    assert aggregate(values, mask, "seq-mean-token-mean") == (pytest.approx(2.0), 1)


def test_scatter_tokens_keeps_row_major_order_and_grad():
    flat = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    mask = torch.tensor([[True, True], [True, False]])
    out = scatter_tokens(flat, mask)
    assert out.tolist() == [[1.0, 2.0], [3.0, 0.0]]
    out.sum().backward()
    assert flat.grad.tolist() == [1.0, 1.0, 1.0]


# -- distillation divergences ------------------------------------------------------------------

def test_reverse_and_forward_kl_of_three_class_distributions():
    # KL(S||T) = 0.7 ln(0.7/0.4) + 0.2 ln(0.2/0.4) + 0.1 ln(0.1/0.2) = 0.7 ln 1.75 - 0.3 ln 2 = 0.18379
    rkl = 0.7 * math.log(1.75) - 0.3 * LN2
    # KL(T||S) = 0.4 ln(0.4/0.7) + 0.4 ln 2 + 0.2 ln 2 = -0.4 ln 1.75 + 0.6 ln 2 = 0.19204
    fkl = -0.4 * math.log(1.75) + 0.6 * LN2
    assert rkl == pytest.approx(0.18379, abs=1e-5) and fkl == pytest.approx(0.19204, abs=1e-5)
    s, t = logits(PS), logits(PT)
    assert reverse_kl(s, t).item() == pytest.approx(rkl, abs=1e-6)
    assert forward_kl(s, t).item() == pytest.approx(fkl, abs=1e-6)
    # logits are only defined up to a constant per row
    assert reverse_kl(s + 3.0, t - 1.0).item() == pytest.approx(rkl, abs=1e-6)
    assert reverse_kl(s, s).item() == pytest.approx(0.0, abs=1e-7)


def test_topk_reverse_kl_tail_bucket_by_hand():
    s = logits(PS)
    pt = [0.5, 0.3, 0.2]
    t = logits(pt)
    # k = 1: K = {0}, tail R = {1, 2}: π_S(R) = 0.3, π_T(R) = 0.5
    # KL_1 = 0.7 ln(0.7/0.5) + 0.3 ln(0.3/0.5)
    val, idx, tail = teacher_topk(t, 1)
    assert idx.tolist() == [[0]] and tail.item() == pytest.approx(math.log(0.5), abs=1e-6)
    got = topk_reverse_kl(s, val, idx, tail).item()
    assert got == pytest.approx(0.7 * math.log(1.4) + 0.3 * math.log(0.6), abs=1e-6)
    assert topk_reverse_kl(s, val, idx).item() == pytest.approx(got, abs=1e-6)  # tail from 1 - Σ_K π_T
    full = kl(PS, pt)
    assert 0.0 <= got <= full  # data-processing inequality
    assert topk_reverse_kl(s, *teacher_topk(t, 3)).item() == pytest.approx(full, abs=1e-6)  # k = V: exact


def test_topk_reverse_kl_stays_a_lower_bound_for_a_confident_teacher():
    """A teacher whose top-k mass rounds to 1 in fp32: the transported log tail keeps the bound."""
    torch.manual_seed(0)
    s, t = torch.randn(64, 200) * 0.1, torch.randn(64, 200) * 40
    full = reverse_kl(s, t)
    approx = topk_reverse_kl(s, *teacher_topk(t, 4))
    assert (approx <= full + 1e-3).all() and (approx >= -1e-6).all()


def test_topk_reverse_kl_gradient_matches_full_when_k_is_v():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5)
    g1 = torch.autograd.grad(topk_reverse_kl(s, *teacher_topk(t, 5)).sum(), s)[0]
    g2 = torch.autograd.grad(reverse_kl(s, t).sum(), s)[0]
    assert torch.allclose(g1, g2, atol=1e-5)


def test_generalized_jsd_end_points_are_forward_and_reverse_kl():
    s, t = logits(PS), logits(PT)
    assert generalized_jsd(s, t, beta=0.0).item() == pytest.approx(kl(PT, PS), abs=1e-6)  # forward KL(T||S)
    assert generalized_jsd(s, t, beta=1.0).item() == pytest.approx(kl(PS, PT), abs=1e-6)  # reverse KL(S||T)


def test_generalized_jsd_mid_beta_by_hand_and_temperature():
    s, t = logits(PS), logits(PT)
    beta = 0.25
    m = [beta * b + (1 - beta) * a for a, b in zip(PS, PT)]  # M = β·T + (1-β)·S
    want = beta * kl(PT, m) + (1 - beta) * kl(PS, m)
    assert generalized_jsd(s, t, beta).item() == pytest.approx(want, abs=1e-6)
    # temperature 2: both distributions become softmax(log p / 2) ∝ sqrt(p)
    sq = lambda p: [math.sqrt(x) / sum(math.sqrt(y) for y in p) for x in p]  # noqa: E731
    assert generalized_jsd(s, t, 1.0, temperature=2.0).item() == pytest.approx(kl(sq(PS), sq(PT)), abs=1e-6)
    # symmetric at β = 0.5 and never negative
    assert generalized_jsd(s, t, 0.5).item() == pytest.approx(generalized_jsd(t, s, 0.5).item(), abs=1e-7)
    assert generalized_jsd(s, s, 0.5).item() == pytest.approx(0.0, abs=1e-7)


def test_generalized_jsd_matches_trl_gkd_trainer():
    gkd = pytest.importorskip("trl.experimental.gkd.gkd_trainer")
    torch.manual_seed(0)
    s, t = torch.randn(6, 11), torch.randn(6, 11)
    for beta in (0.0, 0.3, 0.5, 1.0):
        for temp in (1.0, 0.9):
            theirs = gkd.GKDTrainer.generalized_jsd_loss(s, t, beta=beta, temperature=temp)
            ours = generalized_jsd(s, t, beta, temp).mean()
            assert ours.item() == pytest.approx(theirs.item(), rel=1e-5, abs=1e-6), (beta, temp)


def test_topk_agreement_by_hand():
    s = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    pt = torch.softmax(t, -1)[0]
    a2 = topk_agreement(s, t, 2)  # T top-2 {3, 2}, S top-2 {0, 1}: disjoint
    assert a2["overlap"].item() == 0.0 and a2["shared_mass"].item() == 0.0
    assert a2["teacher_mass"].item() == pytest.approx(float(pt[3] + pt[2]), abs=1e-6)
    a3 = topk_agreement(s, t, 3)  # T {3, 2, 1}, S {0, 1, 2}: shared {1, 2}
    assert a3["overlap"].item() == pytest.approx(2 / 3, abs=1e-6)
    assert a3["shared_mass"].item() == pytest.approx(float(pt[1] + pt[2]), abs=1e-6)
    same = topk_agreement(t, t, 2)
    assert same["overlap"].item() == 1.0 and same["shared_mass"].item() == pytest.approx(same["teacher_mass"].item())
