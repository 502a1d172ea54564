"""`arena plan`: the memory formulas on hand-computed cases, the shapes of the preset models, the
CLI's verdicts (the paper presets fit 8 x 80 GB; a device too small is refused with the numbers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from arena.planning.memory import Budget, layer_activation_bytes, plan_memory
from arena.planning.shapes import ModelShape

REPO = Path(__file__).resolve().parents[1]

# a Llama-like toy: h 64, f 256, 2 layers, 4 heads of 16, 2 kv heads, vocab 1000, untied
TOY = dict(name="toy", hidden=64, intermediate=256, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=1000,
           tied=False)
EMBED = 2 * 1000 * 64  # embedding + untied head
LAYER = 64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 256 + 2 * 64  # q,o + k,v + gate,up,down + 2 norms = 61,568
PARAMS = EMBED + 2 * LAYER + 64  # + final norm


def toy(**kw) -> ModelShape:
    full = dict(params=PARAMS, trainable=PARAMS, adapter_params=0, embed_params=EMBED + 64, adapted_inputs=0)
    return ModelShape(**TOY, **{**full, **kw})


def test_full_finetuning_on_one_device_by_hand():
    s = toy()
    b = Budget(tokens=100, label_tokens=40)
    m = plan_memory(s, b)
    assert PARAMS == 251_200
    assert m.weights == 4 * 251_200 and m.gradients == 4 * 251_200 and m.optimizer == 8 * 251_200
    assert m.gathered == 0 and m.cast_cache == 0 and m.rollout == 0
    a = 38 * 64 + 6 * 32 + 8 * 256  # 4,672 bytes a token a layer
    assert layer_activation_bytes(s, full=True) == a
    assert m.activations == 2 * 100 * a + 100 * a  # L layers saved + one layer's again in backward
    assert m.logits == 10 * 40 * 1000
    assert m.train_peak == 16 * 251_200 + 3 * 100 * 4_672 + 400_000  # 5,820,800 bytes


def test_fused_head_keeps_one_chunk_of_logits():
    from arena.objectives.linear_ce import chunk_rows

    s = toy()  # V = 1,000: 4,194 rows a chunk, so a 40-token micro-batch is one chunk
    assert plan_memory(s, Budget(tokens=100, label_tokens=40, fused_ce=True)).logits == 10 * 40 * 1000 + 2 * 40 * 64
    big = Budget(tokens=100_000, label_tokens=60_000, fused_ce=True)
    rows = chunk_rows(s.vocab)
    assert rows < 60_000 and plan_memory(s, big).logits == 10 * rows * 1000 + 2 * 60_000 * 64
    assert plan_memory(s, Budget(tokens=100_000, label_tokens=60_000)).logits == 10 * 60_000 * 1000


def test_sharding_divides_state_and_adds_the_gathered_units():
    m1, m4 = plan_memory(toy(), Budget(tokens=100, label_tokens=40)), plan_memory(
        toy(), Budget(tokens=100, label_tokens=40, world=4))
    assert m4.weights == m1.weights / 4 and m4.gradients == m1.gradients / 4 and m4.optimizer == m1.optimizer / 4
    # root unit (embeddings, head, final norm) + two layers, fp32
    assert m4.gathered == 4 * ((EMBED + 64) + 2 * ((PARAMS - EMBED - 64) // 2))
    assert m4.activations == m1.activations and m4.logits == m1.logits  # per-rank micro-batch unchanged


def test_checkpointing_keeps_layer_inputs_and_two_layers():
    m = plan_memory(toy(), Budget(tokens=100, label_tokens=40, checkpointing=True))
    assert m.activations == 2 * 100 * 4 * 64 + 2 * 100 * 4_672


def test_adapters_keep_only_their_own_inputs():
    # LoRA r 4 on q and v of both layers: 4·(64+64) + 4·(64+32) per layer, 2 layers
    lora = 2 * (4 * 128 + 4 * 96)
    s = toy(trainable=lora, adapter_params=lora, params=PARAMS, adapted_inputs=2 * (64 + 64))
    m = plan_memory(s, Budget(tokens=10, label_tokens=10, cast_cache=True))  # torch's dropout: a bool mask
    assert m.gradients == 4 * 1_792 and m.optimizer == 8 * 1_792
    assert m.cast_cache == 2 * (PARAMS - 1_792)  # bf16 copy of every frozen weight
    a = 20 * 64 + 6 * 32 + 6 * 256 + (2 + 1) * 128  # adapted in_features a layer: 64 + 64
    assert m.activations == 2 * 10 * a + 10 * a
    no_dropout = plan_memory(s, Budget(tokens=10, label_tokens=10, dropout_bytes=0.0))
    assert m.activations - no_dropout.activations == 3 * 10 * 1 * 128
    skip = plan_memory(s, Budget(tokens=10, label_tokens=10, dropout_bytes=8 * 0.05))  # int64 indices, p = 0.05
    assert skip.activations - no_dropout.activations == pytest.approx(3 * 10 * 0.4 * 128)


def test_the_cpu_fast_paths_change_the_plan(tiny_run_config):
    from arena.planning.plan import Devices, plan_run

    cfg = tiny_run_config("method.dropout=0.05", "train.device=auto", "train.precision=auto", method="lora")
    gpu, cpu = plan_run(cfg, Devices(kind="GPU")), plan_run(cfg, Devices(kind="CPU (host RAM)"))
    assert gpu.budget.dropout_bytes == 1.0 and not gpu.budget.cast_cache
    assert cpu.budget.dropout_bytes == pytest.approx(0.4) and cpu.budget.cast_cache
    fp32 = plan_run(tiny_run_config("train.precision=fp32", "train.device=cpu", method="lora"), Devices())
    assert not fp32.budget.cast_cache  # the cache only holds autocast's bf16 copies


def test_rollouts_hold_a_whole_copy_and_the_kv_cache():
    m = plan_memory(toy(), Budget(tokens=8 * 50, label_tokens=8 * 20, world=2, rollout_seqs=8, rollout_len=50))
    kv = 2 * 2 * 32 * 2 * 8 * 50  # K and V, 2 layers, 32 wide, bf16, 8 sequences of 50
    assert m.rollout == 4 * PARAMS + kv + 4 * 8 * 1000
    assert m.rollout_peak == m.weights + m.gradients + m.optimizer + m.rollout


@pytest.mark.parametrize("name,params", [("Qwen/Qwen2.5-7B-Instruct", 7_615_616_512),
                                         ("meta-llama/Llama-3.2-3B-Instruct", 3_212_749_824)])
def test_the_preset_models_have_their_published_parameter_counts(name, params, tiny_run_config):
    from arena.planning.shapes import model_shape

    cfg = tiny_run_config(method="full", model=name)
    assert model_shape(cfg).params == params


def test_lora_shape_counts_the_adapter_by_hand(tiny_run_config):
    from arena.planning.shapes import model_shape

    s = model_shape(tiny_run_config("method.rank=8", method="lora", model="meta-llama/Llama-3.2-3B-Instruct"))
    h, kv, f = 3072, 1024, 8192  # r·(in + out) for q, k, v, o, gate, up, down
    per_layer = 8 * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + f) + (f + h))
    assert s.trainable == s.adapter_params == 28 * per_layer == 12_156_928
    assert s.adapted_inputs == 28 * (4 * h + 2 * h + f)


def _plan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arena", "plan", *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.parametrize("preset", ["peft-arena-math", "peft-arena-medical"])
def test_the_paper_presets_fit_eight_80gb_gpus(preset):
    p = _plan(f"configs/{preset}.yaml", "--gpus", "8", "--gpu-mem", "80", "--json")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(x) for x in p.stdout.splitlines()]
    assert len(rows) == 16 and all(r["fits"] and r["world"] == 8 for r in rows)
    assert max(r["peak_gib"] for r in rows) < 0.8 * 80  # within the default 20% headroom


def test_a_device_too_small_is_refused_with_the_numbers():
    p = _plan("configs/peft-arena-math.yaml", "--gpus", "8", "--gpu-mem", "24")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "will not fit" in p.stderr and "Qwen2.5-7B-Instruct-full-math-sft" in p.stderr
    assert "has 24 GiB (19.2 usable with --headroom 0.2)" in p.stderr and "weights 3.5" in p.stderr
    # one rank per run for the 7B full run: the hint says to shard
    p = _plan("configs/peft-arena-math.yaml", "--gpus", "8", "--gpu-mem", "80", "--gpus-per-run", "1")
    assert p.returncode == 2 and "raise runner.gpus_per_run" in p.stderr


@pytest.mark.parametrize("args,field", [(["--gpus", "0"], "--gpus"), (["--gpu-mem", "-1"], "--gpu-mem"),
                                        (["--mfu", "1.5"], "--mfu"), (["--headroom", "1"], "--headroom"), (["--gpus-per-run", "0"], "--gpus-per-run")])
def test_bad_flags_exit_2_naming_the_flag(args, field):
    p = _plan("configs/peft-arena-math.yaml", *args)
    assert p.returncode == 2 and field in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_one_run_config_is_planned_too(tmp_path, tiny_run_config):
    from arena.config import dump_yaml

    path = tmp_path / "run.yaml"
    path.write_text(dump_yaml(tiny_run_config(method="lora")))
    p = _plan("--config", str(path), "--gpus", "1", "--gpu-mem", "1", "--json")
    assert p.returncode == 0, p.stderr
    (row,) = [json.loads(x) for x in p.stdout.splitlines()]
    assert row["world"] == 1 and 0 < row["peak_gib"] < 1


def test_a_sweep_on_a_gpu_refuses_runs_that_will_not_fit_before_any_starts(tmp_path, monkeypatch):
    import torch

    from arena.errors import ArenaError
    from arena.sweeps.load import sweep_config_from_dict
    from runners.driver import run_sweep

    class Props:
        total_memory = 64 * 2**20  # a 64 MiB "GPU": the tiny full-FT run's plan needs more

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props())
    cfg = sweep_config_from_dict({
        "name": "fit", "model": "tiny", "methods": [{"name": "full", "lr": 1e-3}],
        "targets": [{"name": "arith", "n_train": 64}], "budget": {"steps": 2, "batch_size": 64, "seq_len": 256},
        "train": {"device": "auto"}, "eval": {"enabled": False}, "diagnostics": {"enabled": False}})
    with pytest.raises(ArenaError, match=r"1 of 1 runs will not fit this machine's GPUs \(1 x 0 GiB\): .*needs"):
        run_sweep(cfg, out=tmp_path / "fit", progress=False, log=lambda m: None)
    assert not (tmp_path / "fit").exists()
    Props.total_memory = 80 * 2**30  # the same run fits an 80 GB device: the check lets it through
    from runners.driver import _check_fits, plan_sweep

    _check_fits(cfg, plan_sweep(cfg, tmp_path / "fit")[1])
