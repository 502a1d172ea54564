"""Regression tests of the defects an audit of the verdict pipeline found (each fails on the old
behaviour): GRPO's importance ratio against the sampler under dropout, AdaLoRA trained without its
orthogonality penalty."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from arena.experiment import run_training
from tests.test_objectives_rl import REWARDS  # noqa: F401  (registers the test_digits reward)

QUIET = {"log": lambda msg: None}


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]


# -- GRPO: one update per batch is on-policy, ρ = 1 -------------------------------------------

def test_grpo_ratio_is_one_under_dropout_not_the_samplers(tiny_run_config, tmp_path):
    """With LoRA dropout the loss forward differs from the eval-mode sampler. The old ratio
    exp(log π_θ − log π_sampler) then clipped tokens at random; on-policy ρ must be exactly 1."""
    cfg = tiny_run_config("objective.n_samples=4", "objective.max_new_tokens=8", "method.dropout=0.5",
                          "objective.clip_eps=0.05", "objective.reward=test_digits", objective="grpo", method="lora",
                          out=str(tmp_path / "run"), train__steps=4, train__lr=5e-2, probe__heldout=0)
    run_training(cfg, **QUIET)
    log = _log(tmp_path / "run")
    # measured with the sampler's log-probs as π_old: clip fractions 0, 0.22, 0.28, 0.20
    assert all(r["clip_fraction"] == 0.0 for r in log), [r["clip_fraction"] for r in log]
    # the sampler/trainer mismatch is still measured: once B ≠ 0 dropout 0.5 makes it visible
    assert all(r["kl_behaviour"] > 1e-4 for r in log[1:]), [r["kl_behaviour"] for r in log]


def test_grpo_ratio_reference_is_the_behaviour_policy_for_stale_batches():
    from arena.objectives.grpo import GRPO

    class Ctx:
        device = torch.device("cpu")

    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    recorded = torch.tensor([-1.5, -1.0])
    on_policy = GRPO.ratio_reference(Ctx, {"old_logprobs": recorded, "staleness": 0}, logp)
    assert torch.equal(on_policy, logp.detach()) and not on_policy.requires_grad
    assert torch.equal(GRPO.ratio_reference(Ctx, {"old_logprobs": recorded}, logp), logp.detach())
    assert torch.equal(GRPO.ratio_reference(Ctx, {"old_logprobs": recorded, "staleness": 2}, logp), recorded)


# -- AdaLoRA: the orthogonality penalty is part of the loss --------------------------------------

def test_orthogonality_penalty_formula():
    from arena.methods.adalora import orthogonality_penalty

    q, _ = torch.linalg.qr(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)))
    assert float(orthogonality_penalty([(q.T, True), (q, False)])) == pytest.approx(0.0, abs=1e-6)
    a = torch.full((2, 4), 0.5)  # A·Aᵀ = [[1, 1], [1, 1]]: ‖· − I‖_F = √2
    b = torch.zeros(5, 2)  # Bᵀ·B = 0: ‖· − I‖_F = √2
    assert float(orthogonality_penalty([(a, True), (b, False)])) == pytest.approx(2 ** 0.5, rel=1e-6)


def test_adalora_trains_with_its_orthogonality_penalty(tiny_run_config, tmp_path):
    def run(name, *sets):
        cfg = tiny_run_config(*sets, method="adalora", out=str(tmp_path / name), train__steps=4, probe__heldout=0,
                              train__lr=5e-2)
        run_training(cfg, **QUIET)
        return _log(tmp_path / name)

    with_reg = run("reg")
    without = run("none", "method.orth_reg_weight=0")
    assert all(r["regularizer"] > 0 for r in with_reg)
    assert "regularizer" not in without[0]
    # the penalty changes the update: the runs part after the first step
    assert with_reg[0]["loss"] == without[0]["loss"]
    assert with_reg[-1]["loss"] != without[-1]["loss"]
    # it is what peft's AdaLoraModel.forward adds to a labelled forward's loss
    from arena.components import build_components
    from arena.runs import load_and_wrap

    cfg = tiny_run_config(method="adalora")
    method, _, _ = build_components(cfg, check_data=False)
    model, _, _ = load_and_wrap(cfg, method, torch.device("cpu"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_A" in n or "lora_B" in n:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(len(n)))
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    model.eval()
    with torch.no_grad():
        plain = model.base_model.model(input_ids=ids, labels=ids).loss
        peft_loss = model(input_ids=ids, labels=ids).loss
        ours = method.regularizer(model)
    assert float(peft_loss - plain) == pytest.approx(float(ours), rel=1e-5)


# -- diagnostics: prompts disjoint from the proxy's; caches keyed by device ----------------------

def test_diagnostic_general_prompts_are_disjoint_from_the_proxy_prompts(data_dir):
    from arena.analysis.prompts import general_prompts, proxy_overlap
    from arena.evaluation.proxies import ProxySettings
    from arena.evaluation.proxies import general_prompts as proxy_prompts

    diag = general_prompts(str(data_dir), 150, seed=1234)  # the default diagnostics size (300 prompts)
    assert len(diag) == 300 and len(set(diag)) == 300
    proxy = {p for _, p in proxy_prompts(str(data_dir), ProxySettings(seed=1234))}
    # the old selection was the proxy's own, extended: all 96 proxy prompts were diagnostic prompts
    assert not set(diag) & proxy and len(proxy) == 96
    assert proxy_overlap(diag, str(data_dir), 1234) == 0
    # the interpolation scorer's and the step probe's prompts are heads of the same orders
    curve = {p for _, p in proxy_prompts(str(data_dir), ProxySettings(n_ifeval=50, n_nq=50, seed=1234))}
    assert not set(diag) & curve


def test_reference_and_activation_caches_are_keyed_by_device(tiny_base, tmp_path):
    from arena.analysis.capture import Caps, capture_token_ids
    from arena.analysis.capture_cache import cache_path, cached_capture, capture_key, load_capture
    from arena.evaluation.proxies import ProxySettings, _ref_path, reference_key

    cpu = reference_key(None, ProxySettings(), "bf16-autocast", {"name": "m"}, device_type="cpu")
    cuda = reference_key(None, ProxySettings(), "bf16-autocast", {"name": "m"}, device_type="cuda")
    assert cpu["device"] == "cpu" and _ref_path(cpu) != _ref_path(cuda)
    model, tok = tiny_base
    mods = ["model.layers.1.mlp.down_proj"]
    cap = cached_capture(model, tok, ["What is 2 + 3?"], mods, {"name": "tiny"}, precision="fp32",
                         device=torch.device("cpu"), cache_dir=tmp_path)
    assert cap.key["device"] == "cpu"
    enc = capture_token_ids(tok, ["What is 2 + 3?"], Caps())
    other = capture_key({"name": "tiny"}, enc, mods, Caps(), "fp32", "cuda")
    assert cache_path(other, tmp_path) != cache_path(cap.key, tmp_path)
    assert load_capture(cache_path(cap.key, tmp_path), other) is None  # a CUDA run never reads the CPU capture
