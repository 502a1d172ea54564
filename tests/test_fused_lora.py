"""arena/training/fused_lora.py: the fused plain-LoRA forward/backward against peft's own, and its fallbacks."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from arena.training.cast_cache import FrozenCastCache
from arena.training.dropout import use_skip_dropout
from arena.training.fused_lora import install_fused_lora


class TwoHeads(nn.Module):
    """Two linear layers reading the same input (as q/k/v do), one with a bias."""

    def __init__(self):
        super().__init__()
        self.q = nn.Linear(64, 48, bias=False)
        self.k = nn.Linear(64, 32, bias=True)

    def forward(self, x):
        return self.q(x).sum() * 0.3 + (self.k(x) ** 2).sum() * 0.1


def _pair(dropout: float, skip: bool = True, **lora):
    torch.manual_seed(0)
    model = get_peft_model(TwoHeads(), LoraConfig(r=4, lora_alpha=8, target_modules=["q", "k"], lora_dropout=dropout, **lora))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p, std=0.5)  # a fresh B = 0 would hide the adapter path
    if skip:
        use_skip_dropout(model)
    model.train()
    fused = copy.deepcopy(model)
    FrozenCastCache(fused)
    restore = install_fused_lora(fused)
    return model, fused, restore


def _run(model, x, autocast: bool, seed: int = 5):
    torch.manual_seed(seed)  # the same dropout masks for both models
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        y = model(x)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(y, [x, *params])
    return y.detach(), grads


def _rel(a, b):
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_fp32_matches_peft_forward_and_gradients(dropout, monkeypatch):
    from arena.training import fused_lora

    stock, fused, restore = _pair(dropout)
    assert restore.count == 2
    calls = []
    apply = fused_lora._LoRALinear.apply
    monkeypatch.setattr(fused_lora._LoRALinear, "apply", lambda *a: calls.append(1) or apply(*a))
    x = torch.randn(3, 7, 64, requires_grad=True)
    ys, gs = _run(stock, x, autocast=False)
    assert not calls
    yf, gf = _run(fused, x, autocast=False)
    assert len(calls) == 2  # both layers ran the fused function, not peft's forward
    torch.testing.assert_close(yf, ys, rtol=1e-6, atol=1e-5)
    for a, b in zip(gf, gs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_bf16_autocast_within_one_rounding(dropout):
    stock, fused, _ = _pair(dropout)
    x = torch.randn(3, 7, 64, requires_grad=True)
    ys, gs = _run(stock, x, autocast=True)
    yf, gf = _run(fused, x, autocast=True)
    assert _rel(yf, ys) < 1e-2
    for a, b in zip(gf, gs):
        assert a.dtype == b.dtype
        assert _rel(a, b) < 2e-2  # 2^-8 relative per bf16 rounding, a few roundings moved


def test_dropout_masks_are_the_skip_samplers():
    """Same seed: the fused layer zeroes the same inputs as SkipDropout would (the adapter's input gradient
    vanishes exactly there)."""
    stock, fused, _ = _pair(0.5)
    x = torch.randn(5, 64, requires_grad=True)
    for model in (stock, fused):
        model.base_model.model.q.base_layer.weight.data.zero_()  # leave only the adapter path's input gradient
        model.base_model.model.k.base_layer.weight.data.zero_()
    _, gs = _run(stock, x, autocast=False)
    _, gf = _run(fused, x, autocast=False)
    assert torch.equal(gs[0] == 0, gf[0] == 0)
    assert 0.2 < float((gf[0] == 0).float().mean()) < 0.8  # about p of the entries (two layers' masks overlap)


def test_in_place_change_of_the_input_is_recast():
    stock, fused, _ = _pair(0.0)
    x = torch.randn(4, 64)
    with torch.no_grad():
        fused(x)
        x.mul_(3.0)  # same tensor object, new version: the shared cast must not be reused
        torch.testing.assert_close(fused(x), stock(x), rtol=1e-6, atol=1e-5)


def test_variants_and_torch_dropout_take_peft_forward_bit_for_bit():
    x = torch.randn(3, 64, requires_grad=True)
    for kwargs in ({"use_dora": True}, {}):
        stock, fused, restore = _pair(0.1, skip="use_dora" in kwargs, **kwargs)
        assert restore.count == 2  # installed, but each call falls back
        ys, gs = _run(stock, x, autocast=True)
        yf, gf = _run(fused, x, autocast=True)
        assert torch.equal(ys, yf) and all(torch.equal(a, b) for a, b in zip(gs, gf))


def test_disabled_adapters_and_restore():
    stock, fused, restore = _pair(0.0)
    x = torch.randn(3, 64)
    with torch.no_grad(), fused.disable_adapter(), stock.disable_adapter():
        assert torch.equal(fused(x), stock(x))
    restore()
    assert not any("forward" in vars(m) and getattr(vars(m)["forward"], "_arena_fused_lora", False)
                   for m in fused.modules())
    with torch.no_grad():
        torch.manual_seed(1)
        a = fused(x)
        torch.manual_seed(1)
        assert torch.equal(a, stock(x))
