"""The fused head + cross-entropy (arena/objectives/linear_ce.py) against the stock F.linear + F.cross_entropy."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from arena.objectives.linear_ce import chunk_rows, linear_cross_entropy_sum
from arena.objectives.losses import label_ce_sum, label_logits, token_ce_sum


def _inputs(n=53, vocab=301, d=24, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g).to(dtype).requires_grad_()
    w = (torch.randn(vocab, d, generator=g) * 0.5).to(dtype).requires_grad_()
    y = torch.randint(0, vocab, (n,), generator=g)
    return h, w, y


def _grads(loss, *xs, scale=0.37):
    (loss * scale).backward()  # a non-unit incoming gradient, as the loop's 1/step_tokens is
    out = [x.grad.clone() for x in xs]
    for x in xs:
        x.grad = None
    return out


@pytest.mark.parametrize("rows", [1, 7, 16, 53, 1000])
def test_fp32_matches_stock_loss_and_gradients(rows):
    h, w, y = _inputs()
    stock = F.cross_entropy(F.linear(h, w), y, reduction="sum")
    gh, gw = _grads(stock, h, w)
    fused = linear_cross_entropy_sum(h, w, y, rows=rows)
    fh, fw = _grads(fused, h, w)
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, stock, rtol=1e-6, atol=0)
    torch.testing.assert_close(fh, gh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fw, gw, rtol=1e-5, atol=1e-6)


def test_autocast_per_token_losses_are_bit_identical_and_gradients_within_bf16_rounding():
    h, w, y = _inputs(n=40, vocab=997)
    wc = w.detach().to(torch.bfloat16)
    with torch.autocast("cpu", torch.bfloat16):
        per_token = F.cross_entropy(F.linear(h, w).float(), y, reduction="none")
        stock = per_token.sum()
    gh, gw = _grads(stock, h, w)
    with torch.autocast("cpu", torch.bfloat16):
        # one row per chunk: each chunk's sum is one token's loss, so the tokens can be compared exactly
        for i in range(4):
            assert torch.equal(linear_cross_entropy_sum(h[i:i + 1].detach(), w.detach(), y[i:i + 1], wc), per_token[i].detach())
        fused = linear_cross_entropy_sum(h, w, y, wc, rows=16)
    fh, fw = _grads(fused, h, w)
    assert fh.dtype == h.dtype and fw.dtype == w.dtype
    torch.testing.assert_close(fused, stock, rtol=1e-6, atol=0)
    # both round the logits' gradient to bf16 once (2^-8 relative), in a different place
    assert float((fh - gh).abs().max()) <= 2e-2 * float(gh.abs().max())
    assert float((fw - gw).abs().max()) <= 2e-2 * float(gw.abs().max())


def test_bf16_weights_without_autocast():
    h, w, y = _inputs(dtype=torch.bfloat16)
    stock = F.cross_entropy(F.linear(h, w).float(), y, reduction="sum")
    gh, _ = _grads(stock, h, w)
    fused = linear_cross_entropy_sum(h, w, y, rows=10)
    fh, _ = _grads(fused, h, w)
    torch.testing.assert_close(fused, stock, rtol=1e-6, atol=0)
    assert fh.dtype == torch.bfloat16
    assert float((fh.float() - gh.float()).abs().max()) <= 2e-2 * float(gh.float().abs().max())


def test_frozen_head_gets_no_gradient_and_no_grad_skips_the_backward_work():
    h, w, y = _inputs()
    w.requires_grad_(False)
    fused = linear_cross_entropy_sum(h, w, y, rows=8)
    fused.backward()
    assert w.grad is None and h.grad is not None
    with torch.no_grad():
        again = linear_cross_entropy_sum(h, w, y, rows=8)
    assert not again.requires_grad and torch.equal(again, fused.detach())


def test_empty_and_mismatched_inputs():
    h, w, y = _inputs(n=0)
    loss = linear_cross_entropy_sum(h, w, y)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    h, w, y = _inputs()
    with pytest.raises(ValueError, match="do not match"):
        linear_cross_entropy_sum(h[:, :5], w, y)
    with pytest.raises(ValueError, match="one id per hidden row"):
        linear_cross_entropy_sum(h, w, y[:3])


def test_chunk_rows_bounds_the_chunk_memory():
    assert chunk_rows(49152) == 85  # 4M fp32 logits: 16 MB
    assert chunk_rows(10**7) == 8 and chunk_rows(1) == 1 << 22


def test_model_level_matches_label_logits(tiny_lora):
    """label_ce_sum on the tiny peft model equals token_ce_sum(label_logits) with the same gradients."""
    model = tiny_lora.train()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 200, (2, 19), generator=g)
    labels = ids.clone()
    labels[:, :6] = -100
    trainable = [p for p in model.parameters() if p.requires_grad]
    stock = token_ce_sum(*label_logits(model, ids, labels))
    sg = torch.autograd.grad(stock, trainable)
    fused, n = label_ce_sum(model, ids, labels)
    fg = torch.autograd.grad(fused, trainable)
    assert n == int((labels[:, 1:] != -100).sum())
    torch.testing.assert_close(fused, stock, rtol=1e-6, atol=0)
    for a, b in zip(fg, sg):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_model_level_declines_heads_it_does_not_cover(tiny_base):
    model = copy.deepcopy(tiny_base[0])
    ids = torch.randint(3, 200, (1, 9))
    model.config.final_logit_softcapping = 30.0
    assert label_ce_sum(model, ids, ids) is None
    model.config.final_logit_softcapping = None
    head = model.get_output_embeddings()
    model.set_output_embeddings(torch.nn.Linear(head.in_features, head.out_features, bias=True))
    assert label_ce_sum(model, ids, ids) is None
