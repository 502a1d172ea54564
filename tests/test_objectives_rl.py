"""GRPO, OPD and GKD in the shared core: they learn (not just run), fail clearly on bad input, and
run end to end from the CLI. Everything uses the tiny random model with one thread, fp32.

The toy task for GRPO: the reward is the share of digit characters in an 8-token completion of an
arith prompt (a dense, verifiable signal a random 2-layer model can climb in ~30 steps). A control
run with the reversed reward must move the other way, so the rise is the reward's doing, not drift.
The OPD teacher is a second tiny model (seed 1, same tokenizer) whose logits are sharpened 20x by
its final norm, so the reverse KL to it starts high.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import interrupted_run, prepared_context
import torch

from arena.cli import main
from arena.errors import ArenaError, ConfigError
from arena.experiment import run_training
from arena.rewards import REWARDS

QUIET = {"log": lambda msg: None}
LEARN = dict(train__steps=30, train__lr=1e-2, train__warmup_steps=0, train__schedule="constant", probe__heldout=0)


def _digit_share(completion: str, answer: str) -> float:
    s = completion.replace(" ", "")
    return sum(c.isdigit() for c in s) / max(1, len(s))


for _name, _fn in (("test_digits", _digit_share), ("test_no_digits", lambda c, a: 1.0 - _digit_share(c, a))):
    if _name not in REWARDS:
        REWARDS.register(_name)(_fn)


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


# -- learning -----------------------------------------------------------------------------------

@pytest.mark.parametrize("reward,direction", [("test_digits", +1), ("test_no_digits", -1)])
def test_grpo_climbs_a_verifiable_reward(tiny_run_config, tmp_path, reward, direction):
    cfg = tiny_run_config("objective.n_samples=4", "objective.max_new_tokens=8", f"objective.reward={reward}",
                          objective="grpo", method="full", out=str(tmp_path / "run"), **LEARN)
    run_training(cfg, **QUIET)
    log = _log(tmp_path / "run")
    digits = [r["reward_mean"] if direction > 0 else 1 - r["reward_mean"] for r in log]
    first, last = _mean(digits[:5]), _mean(digits[-5:])
    # measured: digit share 0.41 -> 1.00 (digit reward), 0.35 -> 0.00 (reversed reward)
    assert direction * (last - first) > 0.3, (first, last)
    rewards = [r["reward_mean"] for r in log]
    assert _mean(rewards[-5:]) > _mean(rewards[:5]) + 0.3
    for key in ("reward_std", "pass_rate", "response_length", "clip_fraction", "kl_behaviour", "gen_s"):
        assert key in log[0]


def test_grpo_is_deterministic_for_a_seed(tiny_run_config, tmp_path):
    sets = dict(objective="grpo", method="lora", train__steps=4, probe__heldout=0)
    opts = ("objective.n_samples=3", "objective.max_new_tokens=6")
    run_training(tiny_run_config(*opts, out=str(tmp_path / "a"), **sets), **QUIET)
    run_training(tiny_run_config(*opts, out=str(tmp_path / "b"), **sets), **QUIET)
    strip = lambda log: [{k: v for k, v in r.items() if k not in ("seconds", "tokens_per_s", "gen_s", "rollout_s")}
                         for r in log]  # noqa: E731
    assert strip(_log(tmp_path / "a")) == strip(_log(tmp_path / "b"))


def test_grpo_resume_after_interrupt_matches_uninterrupted(tiny_run_config, tmp_path, monkeypatch):
    """batches() depends only on (seed, step) and the weights: a resumed run samples the same groups."""
    from safetensors.torch import load_file

    from arena.objectives.grpo import GRPO

    sets = dict(objective="grpo", method="lora", train__steps=4, train__save_every=2, train__lr=1e-2, probe__heldout=0)
    opts = ("objective.n_samples=2", "objective.max_new_tokens=6")
    run_training(tiny_run_config(*opts, out=str(tmp_path / "a"), **sets), **QUIET)
    interrupted_run(monkeypatch, GRPO, 3, lambda: run_training(tiny_run_config(*opts, out=str(tmp_path / "b"), **sets), **QUIET))
    rec = run_training(tiny_run_config(*opts, out=str(tmp_path / "b"), **sets), **QUIET)
    assert rec["train"]["resumed_from"] == 2
    wa, wb = (load_file(str(tmp_path / r / "final" / "trainable.safetensors")) for r in ("a", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["reward_mean"] for r in _log(tmp_path / "a")] == [r["reward_mean"] for r in _log(tmp_path / "b")]


def test_opd_lowers_reverse_kl_to_a_fixed_teacher(tiny_run_config, tmp_path, teacher_dir, tokenizer):
    from arena.models.loader import load_model
    from arena.objectives.opd import opd_diagnostics

    # train.seed 1: over seeds 0-3, seeds 1-3 end at reverse KL 0.00 with either sampler (torch.multinomial
    # or the native engine's inverse CDF), while seed 0 ends at 0.11 / 0.52 of the start, so a fixed-seed
    # threshold on seed 0 tested the draw of the rollouts more than OPD (measured 2026-12-06)
    cfg = tiny_run_config("objective.max_new_tokens=8", f"objective.teacher={teacher_dir}", "train.seed=1",
                          objective="opd", method="full", out=str(tmp_path / "run"), **LEARN)
    rec = run_training(cfg, **QUIET)
    assert rec["data"]["teacher"]["kind"] == "model"
    log = _log(tmp_path / "run")
    for key in ("reverse_kl", "overlap", "shared_mass", "teacher_mass"):
        assert key in log[0]
    teacher, _, _ = load_model(str(teacher_dir))
    base, _, _ = load_model("tiny")
    prompts = [f"What is {a} + {b}?" for a, b in ((1, 2), (30, 4), (55, 12), (7, 80), (9, 9), (40, 41))]
    kw = dict(max_new_tokens=8, n_buckets=4, seed=0, top_k=4)
    before = opd_diagnostics(base, teacher, tokenizer, prompts, **kw)
    after = opd_diagnostics(rec["_model"], teacher, tokenizer, prompts, **kw)
    # measured (seed 1): 14.49 -> 0.00 nats/token
    assert after["reverse_kl"] < 0.3 * before["reverse_kl"], (before["reverse_kl"], after["reverse_kl"])
    assert after["overlap"] > before["overlap"]
    assert len(before["by_position"]) == 4 and sum(b["tokens"] for b in before["by_position"]) == before["tokens"]


def test_opd_top_k_approximation_also_learns(tiny_run_config, tmp_path, teacher_dir):
    cfg = tiny_run_config("objective.max_new_tokens=8", f"objective.teacher={teacher_dir}", "objective.top_k=4",
                          objective="opd", method="full", out=str(tmp_path / "run"), **LEARN)
    run_training(cfg, **QUIET)
    log = _log(tmp_path / "run")
    assert all(r["reverse_kl_topk"] <= r["reverse_kl"] + 1e-4 for r in log)  # a lower bound of the full KL
    assert _mean(r["reverse_kl"] for r in log[-5:]) < 0.3 * _mean(r["reverse_kl"] for r in log[:5])


def test_gkd_off_policy_forward_kl_learns_and_on_policy_reverse_equals_opd(tiny_run_config, tmp_path, teacher_dir):
    # λ = 0, β = 0: supervised KD on the target's reference responses (forward KL)
    cfg = tiny_run_config("objective.max_new_tokens=8", f"objective.teacher={teacher_dir}", "objective.lmbda=0",
                          "objective.beta=0", "objective.temperature=1", objective="gkd", method="full",
                          out=str(tmp_path / "run"), **LEARN)
    run_training(cfg, **QUIET)
    log = _log(tmp_path / "run")
    assert all(r["on_policy"] == 0.0 for r in log)
    assert _mean(r["jsd"] for r in log[-5:]) < 0.5 * _mean(r["jsd"] for r in log[:5])
    # λ = 1, β = 1, T = 1 is OPD: the same loss on the same batch
    opd_cfg = tiny_run_config("objective.max_new_tokens=8", f"objective.teacher={teacher_dir}", objective="opd",
                              method="full", probe__heldout=0)
    ctx, _, opd = prepared_context(opd_cfg)
    gkd_cfg = tiny_run_config("objective.max_new_tokens=8", f"objective.teacher={teacher_dir}", "objective.lmbda=1",
                              "objective.beta=1", "objective.temperature=1", objective="gkd", method="full")
    from arena.objectives.gkd import GKD

    gkd = GKD(gkd_cfg.objective.options)
    gkd.prepare(ctx)
    batch = opd.batches(ctx, 0)[0]
    a, b = opd.loss(ctx, batch), gkd.loss(ctx, batch)
    assert a.n_tokens == b.n_tokens and torch.allclose(a.loss_sum, b.loss_sum, rtol=1e-5)


# -- the GRPO step in detail --------------------------------------------------------------------

def test_grpo_batches_carry_groups_advantages_and_step_normalisation(tiny_run_config):
    cfg = tiny_run_config("objective.n_samples=4", "objective.max_new_tokens=6", "objective.prompts_per_step=3",
                          "objective.loss_agg=seq-mean-token-mean", objective="grpo", method="lora",
                          train__grad_accum=2, probe__heldout=0)
    ctx, _, obj = prepared_context(cfg)
    batches = obj.batches(ctx, 0)
    assert len(batches) == 2  # grad_accum micro-batches
    assert [b["advantages"].numel() for b in batches] == [8, 4]  # 3 prompts x 4 samples split 2 + 1
    for b in batches:
        assert b["n_loss_tokens"] == b["advantages"].numel()  # seq-mean: one unit per sequence
        groups = b["advantages"].view(-1, 4)
        assert torch.allclose(groups.mean(1), torch.zeros(groups.shape[0]), atol=1e-5)
        assert b["old_logprobs"].numel() == int(b["completion_mask"].sum())
    out = obj.loss(ctx, batches[0])
    assert out.n_tokens == 8 and out.loss_sum.requires_grad
    # on-policy, one update: the ratio is 1 everywhere (LoRA dropout aside), so nothing is clipped
    assert out.metrics["clip_fraction"] < 0.2
    assert abs(out.metrics["kl_behaviour"]) < 0.05


@pytest.mark.parametrize("method,reference", [("lora", "adapters-disabled"), ("full", "frozen-copy"),
                                              ("pissa", "frozen-copy")])
def test_grpo_kl_reference_is_the_base_model(tiny_run_config, tiny_base, method, reference):
    """After training steps the reference log-probs still equal the untouched base model's."""
    from arena.rollouts import completion_logits
    from arena.training.loop import train

    # the toy reward, so advantages are not all zero and the policy moves (arith rewards are 0 here)
    cfg = tiny_run_config("objective.n_samples=2", "objective.max_new_tokens=6", "objective.kl_coef=0.1",
                          "objective.reward=test_digits", objective="grpo", method=method, train__steps=3, train__lr=1e-2, probe__heldout=0)
    ctx, m, obj = prepared_context(cfg)
    assert obj.reference == reference
    train(ctx, obj, m, None, 1e-2)
    batch = obj.batches(ctx, 7)[0]
    assert "kl" in obj.loss(ctx, batch).metrics
    base, _ = tiny_base
    logits, targets = completion_logits(base, batch, torch.device("cpu"), "fp32")
    want = -torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    assert torch.allclose(batch["ref_logprobs"], want, atol=1e-4)
    cur = torch.nn.functional.cross_entropy(completion_logits(ctx.model.eval(), batch, torch.device("cpu"), "fp32")[0],
                                            targets, reduction="none")
    assert not torch.allclose(-cur, want, atol=1e-4)  # the policy itself has moved


# -- bad input ----------------------------------------------------------------------------------

def test_option_errors(tiny_run_config, teacher_dir):
    with pytest.raises(ConfigError, match="GRPO needs at least 2 samples per prompt"):
        tiny_run_config("objective.n_samples=1", objective="grpo")
    with pytest.raises(ConfigError, match=r"objective\.reward.*did you mean 'arith'"):
        tiny_run_config("objective.reward=arit", objective="grpo")
    with pytest.raises(ConfigError, match=r"objective\.loss_agg"):
        tiny_run_config("objective.loss_agg=mean", objective="grpo")
    with pytest.raises(ConfigError, match=r"objective\.teacher.*required"):
        tiny_run_config(objective="opd")
    with pytest.raises(ConfigError, match=r"objective\.beta"):
        tiny_run_config(f"objective.teacher={teacher_dir}", "objective.beta=2", objective="gkd")
    with pytest.raises(ConfigError, match=r"objective\.temperature"):
        tiny_run_config("objective.temperature=0", objective="grpo")


def test_teacher_with_another_tokenizer_is_refused(tiny_run_config, other_tokenizer_teacher, tmp_path):
    cfg = tiny_run_config(f"objective.teacher={other_tokenizer_teacher}", objective="opd", out=str(tmp_path / "run"))
    with pytest.raises(ArenaError) as e:
        run_training(cfg, **QUIET)
    msg = str(e.value)
    assert str(other_tokenizer_teacher) in msg and "different tokenizers" in msg and "student" in msg
    assert not (tmp_path / "run").exists()


# -- CLI ----------------------------------------------------------------------------------------

FAST = ["--model", "tiny", "--target", "arith", "--set", "train.progress=false", "--set", "target.n_train=256",
        "--set", "train.seq_len=64", "--set", "probe.heldout=4", "--set", "probe.greedy=2",
        "--set", "probe.max_new_tokens=4", "--set", "objective.max_new_tokens=6"]


def test_cli_grpo_end_to_end_and_opd_from_a_run_folder_teacher(capsys, tmp_path):
    grpo = tmp_path / "grpo"
    code = main(["train", *FAST, "--objective", "grpo", "--method", "lora", "--steps", "3",
                 "--set", "objective.n_samples=2", "--out", str(grpo)])
    out, err = capsys.readouterr()
    assert code == 0, err
    rec = json.loads((grpo / "record.json").read_text())
    assert rec["status"] == "done" and rec["objective"] == "grpo" and rec["data"]["reward"] == "arith"
    assert {"reward_mean", "pass_rate", "clip_fraction"} <= set(_log(grpo)[0])
    # the finished GRPO run is the teacher of an OPD run (`--teacher` shortcut)
    opd = tmp_path / "opd"
    code = main(["train", *FAST, "--objective", "opd", "--method", "lora", "--steps", "2",
                 "--teacher", str(grpo), "--out", str(opd)])
    out, err = capsys.readouterr()
    assert code == 0, err
    rec = json.loads((opd / "record.json").read_text())
    assert rec["objective"] == "opd" and rec["data"]["teacher"]["kind"] == "run"
    assert rec["config"]["objective"]["teacher"] == str(grpo)


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--objective", "grpo", "--set", "objective.n_samples=1"], ["objective.n_samples", "at least 2 samples"]),
        (["--objective", "grpo", "--set", "objective.reward=mathh"], ["objective.reward", "did you mean 'math'?"]),
        (["--objective", "opd"], ["objective.teacher", "required"]),
        (["--objective", "sft", "--teacher", "tiny"], ["objective.teacher", "unknown field"]),
    ],
)
def test_cli_bad_rl_input_exits_2_and_writes_nothing(capsys, tmp_path, args, needles):
    out_dir = tmp_path / "run"
    code = main(["train", *FAST, "--steps", "2", "--out", str(out_dir), *args])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and out == "", err
    for n in needles:
        assert n in lines[0]
    assert not out_dir.exists()


def test_cli_teacher_with_other_tokenizer_exits_2_and_writes_nothing(capsys, tmp_path, other_tokenizer_teacher):
    out_dir = tmp_path / "run"
    code = main(["train", *FAST, "--objective", "gkd", "--steps", "2", "--teacher", str(other_tokenizer_teacher),
                 "--out", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 2 and "different tokenizers" in err and str(other_tokenizer_teacher) in err
    assert not out_dir.exists()


def test_cli_opd_check(capsys, teacher_dir, other_tokenizer_teacher):
    argv = ["opd-check", "--teacher", str(teacher_dir), "--student", "tiny", "--target", "arith", "--n-prompts", "4",
            "--top-k", "4", "--max-new-tokens", "8", "--buckets", "4", "--precision", "fp32", "--device", "cpu"]
    assert main(argv + ["--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["samples"] == 4 and len(res["by_position"]) == 4
    assert 0 <= res["overlap"] <= 1 and 0 <= res["shared_mass"] <= res["teacher_mass"] <= 1 + 1e-6
    assert res["reverse_kl"] > 0
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "top-4 overlap" in table and "reverse KL" in table and "positions" in table
    code = main(["opd-check", "--teacher", str(other_tokenizer_teacher), "--student", "tiny", "--target", "arith",
                 "--n-prompts", "2"])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("arena opd-check: error:") and "different tokenizers" in err
