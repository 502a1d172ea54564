"""The shared training core: resume, reproducibility, accumulation, NaN handling, schedules, checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from arena.errors import TrainingFailed
from arena.experiment import run_training
from arena.training.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    optimizer_from_flat,
    optimizer_to_flat,
    save_checkpoint,
)
from arena.training.schedule import lr_factor

QUIET = {"log": lambda msg: None}


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "trainable.safetensors"))


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs (max {float((a[k] - b[k]).abs().max()):.3g})"


# -- resume ---------------------------------------------------------------------------------------

def test_resume_after_interrupt_is_bitwise_identical(tiny_run_config, tmp_path, monkeypatch):
    """Run B is killed during step 6 (after the step-4 checkpoint and after logging step 5), then
    re-run into the same folder; it must end exactly where the uninterrupted run A ends."""
    from arena.objectives.sft import SFT

    # lora keeps its dropout (0.05), so the RNG state saved in the checkpoint matters too.
    sets = dict(method="lora", train__lr=1e-2, train__steps=6, train__save_every=2, probe__heldout=0)
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    rec_a = run_training(tiny_run_config(out=str(run_a), **sets), **QUIET)
    assert rec_a["train"]["resumed_from"] == 0
    assert rec_a["train"]["fast_paths"]["skip_dropout_modules"] > 0  # the skip sampler's RNG use resumes too

    real_batches = SFT.batches

    def dying_batches(self, ctx, step):
        if step == 5:  # 0-based: the 6th step
            raise KeyboardInterrupt
        return real_batches(self, ctx, step)

    monkeypatch.setattr(SFT, "batches", dying_batches)
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny_run_config(out=str(run_b), **sets), **QUIET)
    monkeypatch.setattr(SFT, "batches", real_batches)
    assert [p.name for p in list_checkpoints(run_b / "checkpoints")] == ["step-000002", "step-000004"]
    assert [r["step"] for r in _log(run_b)] == [1, 2, 3, 4, 5]  # step 5 was logged, not checkpointed
    assert not (run_b / "record.json").exists() and not (run_b / "final").exists()

    rec_b = run_training(tiny_run_config(out=str(run_b), **sets), **QUIET)
    assert rec_b["status"] == "done"
    assert rec_b["train"]["resumed_from"] == 4
    log_a, log_b = _log(run_a), _log(run_b)
    assert [r["step"] for r in log_b] == [1, 2, 3, 4, 5, 6]  # each step exactly once
    assert [r["loss"] for r in log_b] == [r["loss"] for r in log_a]
    assert [r["lr"] for r in log_b] == [r["lr"] for r in log_a]
    _assert_same_weights(_weights(run_a), _weights(run_b))


def test_restart_without_checkpoint_logs_each_step_once(tiny_run_config, tmp_path, monkeypatch):
    """A run killed before its first checkpoint restarts at step 0: the killed attempt's log lines go."""
    from arena.objectives.sft import SFT

    sets = dict(method="lora", train__lr=1e-2, train__steps=4, probe__heldout=0)
    run = tmp_path / "r"
    real_batches = SFT.batches

    def dying_batches(self, ctx, step):
        if step == 2:
            raise KeyboardInterrupt
        return real_batches(self, ctx, step)

    monkeypatch.setattr(SFT, "batches", dying_batches)
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny_run_config(out=str(run), **sets), **QUIET)
    monkeypatch.setattr(SFT, "batches", real_batches)
    assert [r["step"] for r in _log(run)] == [1, 2]
    rec = run_training(tiny_run_config(out=str(run), **sets), **QUIET)
    assert rec["train"]["resumed_from"] == 0
    assert [r["step"] for r in _log(run)] == [1, 2, 3, 4]


# -- reproducibility --------------------------------------------------------------------------

def test_same_seed_same_losses_different_seed_different(tiny_run_config, tmp_path):
    sets = dict(method="lora", train__lr=1e-2, train__steps=4, probe__heldout=0)
    runs = {}
    for tag, seed in (("a", 0), ("b", 0), ("c", 1)):
        run_training(tiny_run_config(out=str(tmp_path / tag), train__seed=seed, **sets), **QUIET)
        runs[tag] = ([r["loss"] for r in _log(tmp_path / tag)], _weights(tmp_path / tag))
    assert runs["a"][0] == runs["b"][0]
    _assert_same_weights(runs["a"][1], runs["b"][1])
    assert runs["a"][0] != runs["c"][0]
    assert any(not torch.equal(runs["a"][1][k], runs["c"][1][k]) for k in runs["a"][1])


# -- gradient accumulation ------------------------------------------------------------------------

def _first_step(tiny_run_config, monkeypatch, tmp_path, batch_size, grad_accum):
    """Run one step of full fine-tuning; return (logged loss record, pre-clip grads, micro-batches)."""
    from arena.objectives.sft import SFT

    grads, micro = [], []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy_clip(params, *a, **kw):
        params = list(params)
        grads.append([p.grad.detach().clone() for p in params])
        return real_clip(params, *a, **kw)

    real_batches = SFT.batches

    def spy_batches(self, ctx, step):
        out = real_batches(self, ctx, step)
        micro.append(out)
        return out

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy_clip)
    monkeypatch.setattr(SFT, "batches", spy_batches)
    out = tmp_path / f"b{batch_size}x{grad_accum}"
    cfg = tiny_run_config(out=str(out), method="full", train__steps=1, train__batch_size=batch_size,
                          train__grad_accum=grad_accum, probe__heldout=0)
    run_training(cfg, **QUIET)
    monkeypatch.undo()
    (rec,) = _log(out)
    return rec, grads[0], micro[0]


def test_grad_accumulation_matches_one_big_batch(tiny_run_config, monkeypatch, tmp_path):
    big, g_big, m_big = _first_step(tiny_run_config, monkeypatch, tmp_path, batch_size=4, grad_accum=1)
    acc, g_acc, m_acc = _first_step(tiny_run_config, monkeypatch, tmp_path, batch_size=2, grad_accum=2)
    # Same rows, split in two micro-batches...
    assert len(m_big) == 1 and len(m_acc) == 2
    assert torch.equal(torch.cat([b["input_ids"] for b in m_acc], dim=1), m_big[0]["input_ids"])  # padding-free rows
    # ...with different loss-token counts, so averaging per-micro-batch means would NOT match:
    # only normalising by the step's tokens gives the big-batch gradient.
    assert m_acc[0]["n_loss_tokens"] != m_acc[1]["n_loss_tokens"]
    assert acc["loss_tokens"] == big["loss_tokens"]
    assert acc["loss"] == pytest.approx(big["loss"], abs=1e-5)
    assert acc["grad_norm"] == pytest.approx(big["grad_norm"], rel=1e-4)
    assert len(g_big) == len(g_acc)
    for a, b in zip(g_acc, g_big):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# -- numerical failure ----------------------------------------------------------------------------

def _failing_run(tiny_run_config, tmp_path, monkeypatch, make_bad):
    """Run with the objective's loss passed through `make_bad`; return (error, record.json, run folder)."""
    from arena.objectives.base import LossOutput
    from arena.objectives.sft import SFT

    real = SFT.loss

    def bad_loss(self, ctx, batch):
        out = real(self, ctx, batch)
        return LossOutput(make_bad(out.loss_sum), out.n_tokens, out.metrics)

    monkeypatch.setattr(SFT, "loss", bad_loss)
    out = tmp_path / "run"
    with pytest.raises(TrainingFailed) as info:
        run_training(tiny_run_config(out=str(out), method="lora", train__steps=3, probe__heldout=0), **QUIET)
    record = json.loads((out / "record.json").read_text())
    return info.value, record, out


def test_nan_loss_fails_the_run_and_is_recorded(tiny_run_config, tmp_path, monkeypatch):
    err, record, out = _failing_run(tiny_run_config, tmp_path, monkeypatch, lambda loss: loss * float("nan"))
    assert "non-finite loss" in str(err) and "step 0" in str(err)
    assert record["status"] == "failed"
    assert "TrainingFailed" in record["error"] and "non-finite loss" in record["error"]
    assert not (out / "final").exists()


def test_nan_gradient_fails_the_run(tiny_run_config, tmp_path, monkeypatch):
    def nan_grad(loss):
        # Finite value, NaN gradient: the untaken torch.where branch backpropagates 0 * nan.
        return torch.where(torch.tensor(True), loss, torch.sqrt(-(loss * loss) - 1.0))

    err, record, _ = _failing_run(tiny_run_config, tmp_path, monkeypatch, nan_grad)
    assert "non-finite gradient norm" in str(err)
    assert record["status"] == "failed" and "non-finite gradient" in record["error"]


# -- learning-rate schedule -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "step,total,warmup,kind,min_ratio,expected",
    [
        # warm-up: (step + 1) / warmup, whatever the schedule
        (0, 10, 4, "cosine", 0.0, 0.25),
        (1, 10, 4, "linear", 0.0, 0.5),
        (3, 10, 4, "constant", 0.0, 1.0),
        # cosine after warm-up: p = (step - 4) / 6
        (4, 10, 4, "cosine", 0.0, 1.0),  # p = 0
        (7, 10, 4, "cosine", 0.0, 0.5),  # p = 1/2: (1 + cos(pi/2)) / 2
        (7, 10, 4, "cosine", 0.1, 0.55),  # 0.1 + 0.9 * 0.5
        (6, 10, 4, "cosine", 0.0, 0.75),  # p = 1/3: (1 + 1/2) / 2
        (10, 10, 4, "cosine", 0.2, 0.2),  # p = 1: the floor
        (50, 10, 4, "cosine", 0.2, 0.2),  # past the end stays at the floor
        (9, 10, 0, "cosine", 0.0, 0.5 * (1 + math.cos(math.pi * 0.9))),  # no warm-up: p = 9/10
        (0, 10, 0, "cosine", 0.0, 1.0),
        # linear: r + (1 - r)(1 - p)
        (7, 10, 4, "linear", 0.0, 0.5),
        (7, 10, 4, "linear", 0.2, 0.6),
        (10, 10, 4, "linear", 0.0, 0.0),
        # constant
        (4, 10, 4, "constant", 0.5, 1.0),
        (9, 10, 0, "constant", 0.0, 1.0),
    ],
)
def test_lr_factor_values(step, total, warmup, kind, min_ratio, expected):
    assert lr_factor(step, total, warmup, kind, min_ratio) == pytest.approx(expected, abs=1e-12)


def test_lr_factor_rejects_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(5, 10, 0, "exponential")


def test_logged_lr_follows_the_schedule(tiny_run_config, tmp_path):
    cfg = tiny_run_config(out=str(tmp_path / "r"), method="lora", train__lr=1e-2, train__steps=6,
                          train__warmup_steps=2, train__schedule="linear", train__min_lr_ratio=0.1, probe__heldout=0)
    run_training(cfg, **QUIET)
    got = [r["lr"] for r in _log(tmp_path / "r")]
    # step s (0-based) trains at 1e-2 * f(s): warm-up 1/2, 2/2, then 0.1 + 0.9 * (1 - (s - 2) / 4)
    want = [5e-3, 1e-2, 1e-2, 1e-2 * (0.1 + 0.9 * 0.75), 1e-2 * (0.1 + 0.9 * 0.5), 1e-2 * (0.1 + 0.9 * 0.25)]
    assert got == pytest.approx(want, rel=1e-9)


# -- checkpoints ----------------------------------------------------------------------------------

def _trained_adamw(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01, betas=(0.8, 0.99))
    for _ in range(3):
        model(torch.randn(7, 5)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _one_more_step(model, opt, x):
    model(x).pow(2).sum().backward()
    opt.step()
    opt.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


def test_optimizer_flat_round_trip_through_json_and_safetensors(tmp_path):
    import copy

    from safetensors.torch import save_file

    model, opt = _trained_adamw()
    tensors, meta = optimizer_to_flat(opt)
    assert tensors and all(torch.is_tensor(v) for v in tensors.values())
    # Through the same serialisations a checkpoint uses (safetensors + JSON).
    save_file(tensors, str(tmp_path / "opt.safetensors"))
    tensors2 = load_file(str(tmp_path / "opt.safetensors"))
    meta2 = json.loads(json.dumps(meta))

    model2 = copy.deepcopy(model)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.5)  # wrong hyper-parameters, overwritten by the load
    optimizer_from_flat(opt2, tensors2, meta2)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["state"].keys() == s2["state"].keys()
    for idx in s1["state"]:
        assert s1["state"][idx].keys() == s2["state"][idx].keys()
        for k, v in s1["state"][idx].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][idx][k])), (idx, k)
    for g1, g2 in zip(s1["param_groups"], s2["param_groups"]):
        assert {k: (list(v) if isinstance(v, tuple) else v) for k, v in g1.items()} == \
               {k: (list(v) if isinstance(v, tuple) else v) for k, v in g2.items()}
    # And the restored optimizer takes exactly the same next step.
    x = torch.randn(7, 5)
    for a, b in zip(_one_more_step(model, opt, x), _one_more_step(model2, opt2, x)):
        assert torch.equal(a, b)


def test_save_and_load_checkpoint_restores_weights_optimizer_rng_and_prunes(tmp_path):
    model, opt = _trained_adamw()
    folder = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        trainable = {n: p.detach().clone() for n, p in model.named_parameters()}
        torch.manual_seed(100 + step)
        path = save_checkpoint(folder, step, trainable, opt, {"loss": float(step)})
    assert path.name == "step-000006"
    assert [p.name for p in list_checkpoints(folder)] == ["step-000004", "step-000006"]  # keep=2
    assert not list(folder.glob(".tmp-*"))
    expected_next = torch.rand(3)  # RNG draw right after the step-6 save

    _, opt2 = _trained_adamw(seed=1)  # a different optimizer state, overwritten by the load
    torch.manual_seed(999)
    weights, state = load_checkpoint(list_checkpoints(folder)[-1], opt2)
    assert state["step"] == 6 and state["loss"] == 6.0
    assert torch.equal(torch.rand(3), expected_next)
    for n, p in model.named_parameters():
        assert torch.equal(weights[n], p.detach())
    for idx, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(opt2.state_dict()["state"][idx][k]))


def test_eval_every_logs_the_step_probe(tiny_run_config, tmp_path, data_dir):
    """train.eval_every wires the evaluation layer's step probe into the loop's jsonl log."""
    run = tmp_path / "probe"
    cfg = tiny_run_config(out=str(run), method="lora", train__lr=1e-2, train__steps=4, train__eval_every=2,
                          probe__heldout=0)
    cfg.data_dir = str(data_dir)
    run_training(cfg, **QUIET)
    log = _log(run)
    probed = [r["step"] for r in log if "probe" in r]
    assert probed == [2, 4]
    last = log[-1]["probe"]
    assert math.isfinite(last["general_nll"]) and math.isfinite(last["target_nll"])
    assert last["target_nll_delta"] != 0.0  # the tuned model differs from the base it is compared with
