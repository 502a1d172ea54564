"""SDPO, SRPO, RLSD, RLRT and MOPD in the shared core, on the tiny random model (1 thread, fp32):
the teacher context they build from real rollouts, the reductions to GRPO / OPD the papers imply,
learning, resume with the self-teacher's weights, and bad input from the CLI.

The reward is the share of digit characters in the completion (continuous, so groups have
spread and, with success_threshold 0.5, both successes and failures).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import interrupted_run, prepared_context

from arena.cli import main
from arena.errors import ConfigError
from arena.experiment import run_training
from arena.objectives.self_teacher import ANSWER_TEMPLATE, SOLUTION_TEMPLATE, TeacherRows
from arena.rewards import REWARDS

QUIET = {"log": lambda msg: None}
ROLL = ("objective.n_samples=4", "objective.max_new_tokens=8", "objective.reward=test_digits")


def _digit_share(completion: str, answer: str) -> float:
    s = completion.replace(" ", "")
    return sum(c.isdigit() for c in s) / max(1, len(s))


if "test_digits" not in REWARDS:
    REWARDS.register("test_digits")(_digit_share)


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines() if x.strip()]


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _loss_and_grads(ctx, objective, batch):
    ctx.model.zero_grad(set_to_none=True)
    out = objective.loss(ctx, batch)
    (out.loss_sum / max(1, out.n_tokens)).backward()
    return float(out.loss_sum.detach()), out.n_tokens, _grads(ctx.model)


def _step0(tiny_run_config, *sets, objective: str):
    """(step 0's only micro-batch, (loss, tokens, grads) of it) for a fresh full-FT run of `objective`."""
    ctx, _, obj = prepared_context(tiny_run_config(*sets, objective=objective, method="full"))
    (b,) = obj.batches(ctx, 0)
    return b, _loss_and_grads(ctx, obj, b)


def _assert_same_update(got, want, loss_tol: dict, grad_atol: float):
    assert got[0] == pytest.approx(want[0], **loss_tol) and got[1] == want[1]
    assert all(torch.allclose(want[2][k], got[2][k], atol=grad_atol) for k in want[2])


def _find_batch(ctx, objective, want, steps=range(0, 12)):
    """The first step whose (only) micro-batch satisfies `want` (rollouts are seeded per step)."""
    for s in steps:
        (b,) = objective.batches(ctx, s)
        if want(b):
            return b
    pytest.fail("no step gave a batch with the wanted rewards")


# -- teacher context on real rollouts ---------------------------------------------------------------

def test_sdpo_teacher_context_is_the_first_successful_sibling(tiny_run_config):
    ctx, _, obj = prepared_context(tiny_run_config(*ROLL, objective="sdpo", method="lora"))
    r_ok = lambda b: bool(((b["rewards"] >= 0.5).view(-1, 4).sum(1) >= 1).any())  # noqa: E731
    b = _find_batch(ctx, obj, r_ok)
    rows = TeacherRows.of(b)
    rewards = b["rewards"].view(-1, 4)
    expected = {}
    for g in range(rewards.shape[0]):
        ok = [j for j in range(4) if rewards[g, j] >= 0.5]
        for j in range(4):
            others = [k for k in ok if k != j]
            if others:
                expected[g * 4 + j] = g * 4 + others[0]
    assert rows.rows == sorted(expected) and rows.rows  # who gets a teacher: exactly the samples with a success sibling
    for r, text in zip(rows.rows, rows.texts):
        ex = b["examples"][r]
        demo = b["texts"][expected[r]]
        assert text == SOLUTION_TEMPLATE.format(prompt=ex.prompt, solution=demo)
        assert demo != "" and r != expected[r]
    # the teacher scores the student's own completion tokens after its longer prompt
    t = rows.batch
    for i, r in enumerate(rows.rows):
        comp = b["completions"][r]
        ids = t["input_ids"][i].tolist()
        start = int((t["labels"][i] != -100).nonzero()[0])
        assert ids[start:start + len(comp)] == comp
        assert start > len(b["input_ids"][r][b["labels"][r] == -100])  # longer prompt than the student's
    assert b["metrics"]["teacher_share"] == pytest.approx(len(expected) / 16)


def test_rlsd_context_is_the_reference_answer_and_rlrt_only_correct_rollouts(tiny_run_config):
    ctx, _, rlsd = prepared_context(tiny_run_config(*ROLL, objective="rlsd", method="lora"))
    (b,) = rlsd.batches(ctx, 0)
    rows = TeacherRows.of(b)
    assert rows.rows == [r for r in range(16) if b["advantages"][r] != 0]
    for r, text in zip(rows.rows, rows.texts):
        ex = b["examples"][r]
        assert ex.answer and text == ANSWER_TEMPLATE.format(prompt=ex.prompt, answer=ex.answer)
    ctx, _, rlrt = prepared_context(tiny_run_config(*ROLL, objective="rlrt", method="lora"))
    b = _find_batch(ctx, rlrt, lambda b: bool(((b["rewards"] >= 0.5).view(-1, 4).sum(1) >= 2).any()))
    rows = TeacherRows.of(b)
    assert rows.rows and all(b["rewards"][r] >= 0.5 and b["advantages"][r] != 0 for r in rows.rows)
    for r, text in zip(rows.rows, rows.texts):
        g = r // 4
        first_other = next(k for k in range(g * 4, g * 4 + 4) if k != r and b["rewards"][k] >= 0.5)
        assert text == SOLUTION_TEMPLATE.format(prompt=b["examples"][r].prompt, solution=b["texts"][first_other])


# -- reductions ---------------------------------------------------------------------------------

def test_rlsd_with_lambda_zero_is_grpo(tiny_run_config):
    gb, lg = _step0(tiny_run_config, *ROLL, objective="grpo")
    rb, lr = _step0(tiny_run_config, *ROLL, "objective.lam=0", objective="rlsd")
    assert torch.equal(gb["completion_mask"], rb["completion_mask"]) and torch.equal(gb["advantages"], rb["advantages"])
    _assert_same_update(lr, lg, {"abs": 1e-6}, 1e-7)
    # and λ > 0 changes the update (the teacher's weights do something)
    _, l3 = _step0(tiny_run_config, *ROLL, "objective.lam=1", objective="rlsd")
    assert any(not torch.allclose(lg[2][k], l3[2][k], atol=1e-7) for k in lg[2])


@pytest.mark.parametrize("objective,sign", [("rlsd", +1.0), ("rlrt", -1.0)])
def test_reweighted_advantages_use_the_teachers_log_probs_with_the_papers_sign(tiny_run_config, monkeypatch,
                                                                              objective, sign):
    """Â_t recomputed independently: the teacher rows scored by the model itself (eval mode)."""
    import math

    from arena.objectives.grpo import GRPO
    from arena.rollouts import completion_logits

    ctx, _, obj = prepared_context(tiny_run_config(*ROLL, "objective.lam=1", "objective.lam_decay_steps=null",
                                                   objective=objective, method="full"))
    b = _find_batch(ctx, obj, lambda b: len(b["teacher_rows"]) > 0)
    seen = {}
    monkeypatch.setattr(GRPO, "policy_loss", lambda self, c, bt, logp, cm, adv, m=None: seen.update(adv=adv))
    obj.loss(ctx, b)
    rows = TeacherRows.of(b)
    ctx.model.eval()
    with torch.no_grad():
        t_logits, tok = completion_logits(ctx.model, rows.batch, "cpu", "fp32")
        s_logits, stok = completion_logits(ctx.model, b, "cpu", "fp32")
    lt = torch.log_softmax(t_logits, -1).gather(-1, tok[:, None])[:, 0]
    sel = rows.token_mask(b["completion_mask"])
    ls = torch.log_softmax(s_logits, -1).gather(-1, stok[:, None])[:, 0][sel]
    a = b["advantages"][b["completion_mask"].nonzero()[:, 0]][sel]
    w = torch.exp(torch.sign(a) * sign * (lt - ls)).clamp(0.8, 1.2)
    torch.testing.assert_close(seen["adv"][sel], a * w, atol=1e-5, rtol=1e-5)
    other = ~sel
    torch.testing.assert_close(seen["adv"][other], b["advantages"][b["completion_mask"].nonzero()[:, 0]][other])
    assert math.isfinite(float(w.std()))


def test_srpo_with_no_routed_sample_is_grpo(tiny_run_config):
    # an unreachable success threshold routes nothing to SDPO; the continuous reward keeps A != 0
    _, lg = _step0(tiny_run_config, *ROLL, objective="grpo")
    sb, ls = _step0(tiny_run_config, *ROLL, "objective.success_threshold=2", objective="srpo")
    assert sb["teacher_rows"] == [] and bool((sb["advantages"] != 0).any())
    _assert_same_update(ls, lg, {"abs": 1e-6}, 1e-7)


def test_srpo_routes_failed_samples_with_a_correct_sibling(tiny_run_config):
    ctx, _, srpo = prepared_context(tiny_run_config(*ROLL, objective="srpo", method="lora"))
    b = _find_batch(ctx, srpo, lambda b: bool(((b["rewards"] >= 0.5).view(-1, 4).sum(1) >= 1).any()))
    r = b["rewards"].view(-1, 4)
    want = [g * 4 + j for g in range(r.shape[0]) for j in range(4) if r[g, j] < 0.5 and (r[g] >= 0.5).any()]
    assert b["teacher_rows"] == want
    out = srpo.loss(ctx, b)
    assert out.n_tokens == int(b["completion_mask"].sum())  # one shared token denominator
    assert out.metrics["routed_sdpo"] == pytest.approx(len(want) / 16) and out.metrics["weight_max"] >= 1.0


def test_sdpo_against_itself_without_context_is_zero(tiny_run_config):
    """α = 1, full vocabulary, current weights, empty privileged context: OPD against itself."""
    from arena.objectives.self_teacher import build_rows

    ctx, _, obj = prepared_context(tiny_run_config(
        *ROLL, "objective.alpha=1", "objective.top_k=null", "objective.teacher_weights=current",
        "objective.is_clip=null", objective="sdpo", method="full"))
    b = _find_batch(ctx, obj, lambda b: len(b["teacher_rows"]) > 0)
    rows = b["teacher_rows"]
    build_rows(ctx.tokenizer, rows, [b["examples"][r].prompt for r in rows], b["completions"],
               ctx.tokenizer.pad_token_id).store(b)
    loss, n, grads = _loss_and_grads(ctx, obj, b)
    assert n > 0 and abs(loss) < 1e-5 and max(float(g.abs().max()) for g in grads.values()) < 1e-6


def test_mopd_with_one_teacher_is_opd_sampled_token(tiny_run_config, teacher_dir):
    base = ("objective.max_new_tokens=8",)
    ob, lo = _step0(tiny_run_config, *base, f"objective.teacher={teacher_dir}", "objective.estimator=sampled-token",
                    objective="opd")
    one = f"objective.teachers={{arith: {teacher_dir}}}"
    mb, lm = _step0(tiny_run_config, *base, one, "objective.is_correction=false", objective="mopd")
    assert torch.equal(ob["input_ids"], mb["input_ids"])
    _assert_same_update(lm, lo, {"rel": 1e-5}, 1e-6)
    # with the IS correction on-policy the weights are 1 up to numerics: the same loss
    assert _step0(tiny_run_config, *base, one, objective="mopd")[1][0] == pytest.approx(lo[0], rel=1e-4)


def test_mopd_routes_each_prompt_to_its_domains_teacher(tiny_run_config, teacher_dir):
    """arith's `op` as the domain: '+' prompts scored by the sharpened teacher, '-' by the base."""
    from arena.objectives.teacher import load_teacher

    cfg = tiny_run_config("objective.max_new_tokens=6", "objective.domain_key=op",
                          f"objective.teachers={{'+': {teacher_dir}, '-': tiny}}", objective="mopd", method="full")
    ctx, _, obj = prepared_context(cfg)
    (b,) = obj.batches(ctx, 0)
    assert set(b["domains"]) == {"+", "-"}
    cm = b["completion_mask"]
    row_of = cm.nonzero()[:, 0]
    for d, ref in (("+", teacher_dir), ("-", "tiny")):
        model, _, _ = load_teacher(str(ref))
        rows = [i for i, x in enumerate(b["domains"]) if x == d]
        from arena.rollouts import completion_logits
        sub = {"input_ids": b["input_ids"][rows], "labels": b["labels"][rows]}
        logits, tok = completion_logits(model, sub, "cpu", "fp32")
        want = torch.log_softmax(logits.float(), -1).gather(-1, tok[:, None])[:, 0]
        torch.testing.assert_close(b["teacher_logprobs"][torch.isin(row_of, torch.tensor(rows))], want)


# -- learning and resume ------------------------------------------------------------------------

LEARN = dict(train__steps=30, train__lr=1e-2, train__warmup_steps=0, train__schedule="constant", probe__heldout=0)


def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs)


def test_sdpo_pulls_the_student_towards_a_frozen_self_teacher(tiny_run_config, tmp_path):
    """Teacher frozen at the start weights (synced, never re-synced): the distillation loss falls."""
    cfg = tiny_run_config(*ROLL, "objective.teacher_weights=synced", "objective.teacher_sync_every=1000",
                          "objective.success_threshold=0.3", objective="sdpo", method="full", out=str(tmp_path / "r"), **LEARN)
    run_training(cfg, **QUIET)
    d = [r["distill_loss"] for r in _log(tmp_path / "r") if "distill_loss" in r]
    assert len(d) >= 10 and _mean(d[-5:]) < 0.5 * _mean(d[:5]), d


@pytest.mark.parametrize("objective", ["srpo", "rlsd", "rlrt"])
def test_grpo_family_climbs_the_reward(tiny_run_config, tmp_path, objective):
    cfg = tiny_run_config(*ROLL, objective=objective, method="full", out=str(tmp_path / "r"), **LEARN)
    run_training(cfg, **QUIET)
    log = _log(tmp_path / "r")
    rewards = [r["reward_mean"] for r in log]
    assert _mean(rewards[-5:]) > _mean(rewards[:5]) + 0.2, rewards
    keys = {"srpo": {"routed_sdpo", "routed_tokens"}, "rlsd": {"lambda", "weight_std"}, "rlrt": {"gated", "lambda"}}
    assert keys[objective] <= set().union(*map(set, log))


def test_sdpo_resume_restores_the_ema_teacher(tiny_run_config, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from arena.objectives.sdpo import SDPO

    sets = dict(objective="sdpo", method="lora", train__steps=4, train__save_every=2, train__lr=1e-2, probe__heldout=0)
    opts = (*ROLL, "objective.success_threshold=0.3", "objective.teacher_ema_rate=0.5")
    run_training(tiny_run_config(*opts, out=str(tmp_path / "a"), **sets), **QUIET)
    interrupted_run(monkeypatch, SDPO, 3, lambda: run_training(tiny_run_config(*opts, out=str(tmp_path / "b"), **sets), **QUIET))
    saved = load_file(str(tmp_path / "b" / "checkpoints" / "step-000002" / "objective.safetensors"))
    assert saved and all(k.startswith("teacher.") for k in saved)
    rec = run_training(tiny_run_config(*opts, out=str(tmp_path / "b"), **sets), **QUIET)
    assert rec["train"]["resumed_from"] == 2
    wa, wb = (load_file(str(tmp_path / r / "final" / "trainable.safetensors")) for r in ("a", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["distill_loss"] for r in _log(tmp_path / "a") if "distill_loss" in r] == \
        [r["distill_loss"] for r in _log(tmp_path / "b") if "distill_loss" in r]
    # a checkpoint without the teacher's shadow is refused, not resumed with the wrong teacher
    interrupted_run(monkeypatch, SDPO, 3, lambda: run_training(tiny_run_config(*opts, out=str(tmp_path / "c"), **sets), **QUIET))
    (tmp_path / "c" / "checkpoints" / "step-000002" / "objective.safetensors").unlink()
    with pytest.raises(ConfigError, match="teacher's shadow weights"):
        run_training(tiny_run_config(*opts, out=str(tmp_path / "c"), **sets), **QUIET)


# -- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("objective,sets,match", [
    ("sdpo", ["objective.template='{prompt} please'"], r"objective\.template.*lacks the required slot.*\{solution\}"),
    ("rlsd", ["objective.template='{prompt} {solution}'"], r"objective\.template.*lacks the required slot.*\{answer\}"),
    ("srpo", ["objective.template='{prompt} {soluton}'"], r"objective\.template.*unknown slot.*soluton"),
    ("sdpo", ["objective.teacher_weights=frozen"], r"objective\.teacher_weights"),
    ("sdpo", ["objective.alpha=1.5"], r"objective\.alpha"),
    ("rlsd", ["objective.lam=2"], r"objective\.lam"),
    ("mopd", [], r"objective\.teachers.*required"),
    ("mopd", ["objective.teachers={arith: TEACHER}", "objective.orm_coef=0.5"], r"objective\.n_samples.*orm_coef"),
    ("srpo", ["objective.loss_agg=seq-mean-token-sum"], r"objective\.loss_agg"),
])
def test_option_errors(tiny_run_config, teacher_dir, objective, sets, match):
    with pytest.raises(ConfigError, match=match):
        tiny_run_config(*[x.replace("TEACHER", str(teacher_dir)) for x in sets], objective=objective)


FAST = ["--model", "tiny", "--target", "arith", "--set", "train.progress=false", "--set", "target.n_train=256",
        "--set", "train.seq_len=64", "--set", "probe.heldout=4", "--set", "probe.greedy=2",
        "--set", "probe.max_new_tokens=4", "--set", "objective.max_new_tokens=6"]


def _bad(capsys, tmp_path, args):
    out_dir = tmp_path / "run"
    code = main(["train", *FAST, "--steps", "2", "--out", str(out_dir), *args])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and out == "", err
    assert not out_dir.exists()
    return lines[0]


def test_cli_template_without_the_slot_exits_2(capsys, tmp_path):
    msg = _bad(capsys, tmp_path, ["--objective", "sdpo", "--set", "objective.template={prompt} Solve it."])
    assert "objective.template" in msg and "{solution}" in msg


def test_cli_mopd_domain_without_teacher_exits_2(capsys, tmp_path, teacher_dir):
    msg = _bad(capsys, tmp_path, ["--objective", "mopd", "--set", "objective.domain_key=op",
                                  "--set", f"objective.teachers={{'+': {teacher_dir}}}"])
    assert "objective.teachers" in msg and "no teacher for domain(s) ['-']" in msg
    msg = _bad(capsys, tmp_path, ["--objective", "mopd", "--set", "objective.domain_key=opp",
                                  "--set", f"objective.teachers={{'+': {teacher_dir}}}"])
    assert "objective.domain_key" in msg and "'op'" in msg


def test_cli_mopd_teacher_with_other_tokenizer_exits_2_before_any_weights(capsys, tmp_path, teacher_dir,
                                                                         other_tokenizer_teacher, monkeypatch):
    import arena.objectives.teacher as T  # MOPD opens its teachers through T.open_teacher

    loaded = []
    real = T.load_teacher
    monkeypatch.setattr(T, "load_teacher", lambda *a, **k: loaded.append(a[0]) or real(*a, **k))
    msg = _bad(capsys, tmp_path, ["--objective", "mopd", "--set", "objective.domain_key=op",
                                  "--set", f"objective.teachers={{'+': {teacher_dir}, '-': {other_tokenizer_teacher}}}"])
    assert "different tokenizers" in msg and str(other_tokenizer_teacher) in msg
    assert loaded == []  # the good teacher's weights were not loaded either


def test_cli_runs_each_objective_end_to_end(capsys, tmp_path, teacher_dir):
    for name, extra in (("sdpo", []), ("srpo", []), ("rlsd", []), ("rlrt", []),
                        ("mopd", ["--set", f"objective.teachers={{arith: {teacher_dir}}}"])):
        out = tmp_path / name
        code = main(["train", *FAST, "--objective", name, "--method", "lora", "--steps", "2",
                     "--set", "objective.n_samples=2", "--out", str(out), *extra])
        _, err = capsys.readouterr()
        assert code == 0, err
        rec = json.loads((out / "record.json").read_text())
        assert rec["status"] == "done" and rec["objective"] == name
    capsys.readouterr()
    assert main(["objectives"]) == 0
    listing = capsys.readouterr().out
    for name in ("sdpo", "srpo", "rlsd", "rlrt", "mopd"):
        assert f"\n{name}: " in "\n" + listing
    assert "template='{prompt}\\n\\nCorrect solution:" in listing and "teachers={}" in listing
