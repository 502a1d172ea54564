"""Fused element-wise forms (arena/training/fused_ops.py): fused RoPE must equal transformers'
stock rotary embedding bit for bit (forward and backward), fused RMSNorm must keep the stock
forward and a gradient within fp32 rounding, and a tiny training run must follow the stock path's
loss trajectory (identical with fused RoPE; within the measured tolerance with fused RMSNorm)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers.models.llama import modeling_llama as llama

from arena.experiment import run_training
from arena.training.fused_ops import (
    _RMSNorm,
    fused_apply_rotary_pos_emb,
    install_fused_ops,
)

QUIET = {"log": lambda s: None}


def _rope_inputs(dtype, n=37, heads=4, kv_heads=2, dim=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # the layout the attention forward produces: [1, L, H·D] viewed and transposed to [1, H, L, D]
    q = torch.randn(1, n, heads * dim, generator=gen).to(dtype).view(1, n, heads, dim).transpose(1, 2)
    k = torch.randn(1, n, kv_heads * dim, generator=gen).to(dtype).view(1, n, kv_heads, dim).transpose(1, 2)
    rot = llama.LlamaRotaryEmbedding(llama.LlamaConfig(hidden_size=heads * dim, num_attention_heads=heads, head_dim=dim))
    pos = torch.cat([torch.arange(20), torch.arange(n - 20)])[None]  # two packed documents
    cos, sin = rot(torch.zeros(1, n, heads * dim), pos)
    return q, k, cos, sin


def _rope_run(fn, q, k, cos, sin, seed=1):
    q, k = q.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
    a, b = fn(q, k, cos, sin)
    gen = torch.Generator().manual_seed(seed)
    torch.autograd.backward([a, b], [torch.randn(a.shape, generator=gen), torch.randn(b.shape, generator=gen)])
    return a, b, q.grad, k.grad


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fused_rope_is_bit_identical_to_stock(dtype):
    inputs = _rope_inputs(dtype)
    stock = _rope_run(llama.apply_rotary_pos_emb, *inputs)
    fused = _rope_run(fused_apply_rotary_pos_emb, *inputs)
    for s, f in zip(stock, fused):
        assert s.dtype == f.dtype and s.shape == f.shape
        assert torch.equal(s, f)


def test_fused_rmsnorm_keeps_the_forward_and_the_gradient():
    gen = torch.Generator().manual_seed(0)
    norm = llama.LlamaRMSNorm(48, eps=1e-5)
    norm.weight.data.uniform_(0.5, 1.5, generator=gen)
    x = torch.randn(1, 50, 48, generator=gen).mul_(3).requires_grad_()
    g = torch.randn(1, 50, 48, generator=gen)
    y_stock = norm(x)
    gx_stock, gw_stock = torch.autograd.grad(y_stock, [x, norm.weight], g)
    y = _RMSNorm.apply(x, norm.weight, norm.variance_epsilon)
    gx, gw = torch.autograd.grad(y, [x, norm.weight], g)
    assert torch.equal(y, y_stock)
    # measured: max |Δ| / max |g| ≈ 1e-7 (fp32 rounding of a different, shorter chain)
    assert (gx - gx_stock).abs().max() <= 1e-6 * gx_stock.abs().max()
    assert (gw - gw_stock).abs().max() <= 1e-6 * gw_stock.abs().max()
    # frozen weight (LoRA): only the input gradient, the same one
    norm.weight.requires_grad_(False)
    (gx_frozen,) = torch.autograd.grad(_RMSNorm.apply(x, norm.weight, norm.variance_epsilon), [x], g)
    assert torch.equal(gx_frozen, gx)


def test_install_swaps_llama_code_only_and_undo_restores(tiny_base):
    import copy

    model = copy.deepcopy(tiny_base[0])
    n_norms = sum(isinstance(m, llama.LlamaRMSNorm) for m in model.modules())
    stock_rope = llama.apply_rotary_pos_emb
    restore = install_fused_ops(model, rope=True, rmsnorm=True)
    try:
        assert restore.counts == {"fused_rmsnorm_modules": n_norms, "fused_rope_modules": 1}
        assert llama.apply_rotary_pos_emb is fused_apply_rotary_pos_emb
        assert all("forward" in vars(m) for m in model.modules() if isinstance(m, llama.LlamaRMSNorm))
    finally:
        restore()
    assert llama.apply_rotary_pos_emb is stock_rope
    assert not any("forward" in vars(m) for m in model.modules() if isinstance(m, llama.LlamaRMSNorm))
    # a norm with other code (Gemma-style 1 + w) is left alone
    class OtherNorm(llama.LlamaRMSNorm):
        def forward(self, x):
            return x * (1 + self.weight)

    other = torch.nn.Sequential(OtherNorm(8))
    restore = install_fused_ops(other, rope=False, rmsnorm=True)
    assert restore.counts == {"fused_rmsnorm_modules": 0}
    restore()


def _losses(run_dir) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (run_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("precision", ["bf16-autocast", "fp32"])
def test_tiny_run_follows_the_stock_loss_trajectory(tiny_run_config, tmp_path, precision):
    """New path vs old path on the tiny model, LoRA with dropout (skip sampler, same masks).

    Fused RoPE alone: the same losses to the logged digit. With fused RMSNorm, measured max
    |Δloss| over 12 steps (loss 6.64 -> 6.17): 1e-6 in fp32 (the log's rounding) and 3.1e-4 under
    bf16 autocast (bf16 noise: one ulp of a bf16 activation is 2^-8 relative); bounded at 1e-5 / 2e-3.
    The fused head + cross-entropy and fused LoRA layers on top (the defaults) stay within the same bounds.
    """
    common = {"method": "lora", "train__steps": 12, "probe__heldout": 0, "train__precision": precision,
              "train__lr": 1e-2}
    runs = {}
    for name, rope, norm, ce in (("old", False, False, False), ("rope", True, False, False),
                                 ("new", True, True, False), ("all", True, True, True)):
        out = tmp_path / name
        rec = run_training(tiny_run_config(out=str(out), train__fused_rope=rope, train__fused_rmsnorm=norm,
                                           train__fused_ce=ce, train__fused_lora="on" if ce else "off", **common),
                           **QUIET)
        assert rec["status"] == "done"
        runs[name] = _losses(out)
        if rope:
            assert rec["train"]["fast_paths"]["fused_rope_modules"] == 1
        assert ("fused_lora_modules" in rec["train"]["fast_paths"]) == ce
    assert runs["rope"] == runs["old"]
    tol = 1e-5 if precision == "fp32" else 2e-3
    assert max(abs(a - b) for a, b in zip(runs["new"], runs["old"])) <= tol
    assert max(abs(a - b) for a, b in zip(runs["all"], runs["old"])) <= tol
    assert runs["all"][0] == pytest.approx(runs["old"][0], rel=1e-6)  # the first loss: same per-token values
    assert runs["old"][-1] < runs["old"][0]  # it trains: the comparison is not between two flat lines


def test_fused_options_are_typed(tiny_run_config):
    from arena.errors import ConfigError

    with pytest.raises(ConfigError, match="train.fused_rmsnorm"):
        tiny_run_config(train__fused_rmsnorm="sometimes")
