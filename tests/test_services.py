"""Services (issue 16): the rollout worker with bounded staleness and the teacher service.

Every test runs real child processes over loopback with the tiny model; each is bounded by
services.timeout_s and pytest-timeout, so a regression shows as a failure, never a hang.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from arena.errors import ArenaError, ConfigError, TrainingFailed
from arena.experiment import run_training
from tests.test_objectives_rl import REWARDS  # noqa: F401 — registers test_digits in this process

QUIET = {"log": lambda msg: None}
GRPO = ("objective.n_samples=3", "objective.max_new_tokens=6", "objective.reward=test_digits")
SHORT = dict(objective="grpo", method="lora", train__steps=4, train__lr=1e-2, probe__heldout=0, train__threads=1)


def _weights(run) -> dict:
    return load_file(str(run / "final" / "trainable.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _log(run) -> list[dict]:
    return [json.loads(ln) for ln in (run / "train_log.jsonl").read_text().splitlines() if ln.strip()]


def _learned(log) -> list:
    return [(r["loss"], r["reward_mean"], r["grad_norm"]) for r in log]


def _grpo(tiny_run_config, out, *sets, **fields):
    return tiny_run_config(*GRPO, *sets, out=str(out), **{**SHORT, **fields})


def _kill_after(monkeypatch, cls, attr: str, at_step: int):
    """Kill the service's process (SIGKILL, as an OOM killer would) right after `cls.rollouts`
    (or `score`) has served step `at_step`; returns the list of killed pids."""
    real, killed = getattr(cls, attr), []

    def wrapped(self, step, *a, **kw):
        out = real(self, step, *a, **kw)
        if (step == at_step if attr == "rollouts" else not killed) and not killed:
            killed.append(self.channel.pid)
            os.kill(self.channel.pid, signal.SIGKILL)
        return out

    monkeypatch.setattr(cls, attr, wrapped)
    return killed


# -- rollout worker --------------------------------------------------------------------------------

def test_staleness_0_worker_is_bitwise_the_synchronous_loop(tiny_run_config, tmp_path):
    run_training(_grpo(tiny_run_config, tmp_path / "sync"), **QUIET)
    rec = run_training(_grpo(tiny_run_config, tmp_path / "worker", "services.rollout.mode=process"), **QUIET)
    assert _same(_weights(tmp_path / "sync"), _weights(tmp_path / "worker"))
    assert _learned(_log(tmp_path / "sync")) == _learned(_log(tmp_path / "worker"))
    assert any(r["grad_norm"] > 0 for r in _log(tmp_path / "sync"))  # a signal to compare, not zeros
    assert [r["staleness"] for r in _log(tmp_path / "worker")] == [0, 0, 0, 0]
    assert rec["train"]["services"]["rollout"] == {**rec["train"]["services"]["rollout"], "mode": "process",
                                                   "max_staleness": 0, "restarts": 0}
    assert "services" not in rec["config"] or rec["config"]["services"]["rollout"]["mode"] == "process"


def test_staleness_bounds_the_lag_and_is_reproducible(tiny_run_config, tmp_path):
    sets = ("services.rollout.mode=process", "services.rollout.max_staleness=2")
    run_training(_grpo(tiny_run_config, tmp_path / "a", *sets), **QUIET)
    run_training(_grpo(tiny_run_config, tmp_path / "b", *sets), **QUIET)
    run_training(_grpo(tiny_run_config, tmp_path / "sync"), **QUIET)
    log = _log(tmp_path / "a")
    assert [r["staleness"] for r in log] == [0, 1, 2, 2]  # v(s) = max(0, s - 2)
    assert _same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))  # the schedule, not timing, decides
    # step 1 trains on samples of the initial weights: not what the synchronous run saw
    assert not _same(_weights(tmp_path / "a"), _weights(tmp_path / "sync"))
    assert log[0]["reward_mean"] == _log(tmp_path / "sync")[0]["reward_mean"]


def test_killed_worker_is_restarted_and_the_result_unchanged(tiny_run_config, tmp_path, monkeypatch):
    from arena.services.rollout_worker import AsyncRollouts

    sets = ("services.rollout.mode=process", "services.rollout.max_staleness=1")
    run_training(_grpo(tiny_run_config, tmp_path / "clean", *sets), **QUIET)
    killed = _kill_after(monkeypatch, AsyncRollouts, "rollouts", at_step=1)
    rec = run_training(_grpo(tiny_run_config, tmp_path / "killed", *sets), **QUIET)
    assert len(killed) == 1 and rec["status"] == "done"
    assert rec["train"]["services"]["rollout"]["restarts"] == 1
    assert _same(_weights(tmp_path / "clean"), _weights(tmp_path / "killed"))
    assert _learned(_log(tmp_path / "clean")) == _learned(_log(tmp_path / "killed"))


def test_worker_that_stays_dead_fails_the_run_with_the_reason(tiny_run_config, tmp_path, monkeypatch):
    from arena.records import read_run_record
    from arena.services.rollout_worker import AsyncRollouts

    _kill_after(monkeypatch, AsyncRollouts, "rollouts", at_step=0)
    sets = ("services.rollout.mode=process", "services.rollout.max_staleness=1", "services.max_restarts=0")
    # killed after serving step 0: step 1 notices unless the worker had already sent step 1's batch
    # (max_staleness 1 lets it run one ahead; how far it got depends on its speed), then step 2 does
    with pytest.raises(TrainingFailed, match="rollout worker lost at step [12]: .*died.*services.max_restarts"):
        run_training(_grpo(tiny_run_config, tmp_path / "run", *sets), **QUIET)
    rec = read_run_record(tmp_path / "run")
    assert rec.status == "failed" and "rollout worker lost" in rec.error


def test_worker_error_is_reported_not_retried(tiny_run_config, tmp_path, monkeypatch):
    """An exception inside the worker (here: its engine) fails the run at once with its message."""
    cfg = _grpo(tiny_run_config, tmp_path / "run", "services.rollout.mode=process", "objective.backend=vllm")
    with pytest.raises(TrainingFailed, match="rollout worker failed at step 0.*(vllm|CUDA)"):
        run_training(cfg, **QUIET)


# -- teacher service -------------------------------------------------------------------------------

def _opd(tiny_run_config, out, teacher, *sets, **fields):
    kw = dict(objective="opd", method="lora", train__steps=3, train__lr=1e-2, probe__heldout=0, train__threads=1)
    return tiny_run_config("objective.max_new_tokens=6", f"objective.teacher={teacher}", *sets, out=str(out),
                           **{**kw, **fields})


@pytest.mark.parametrize("transport", ["logits", "hidden"])
def test_teacher_service_equals_the_in_process_teacher_bitwise(tiny_run_config, tmp_path, teacher_dir, transport):
    run_training(_opd(tiny_run_config, tmp_path / "inline", teacher_dir), **QUIET)
    rec = run_training(_opd(tiny_run_config, tmp_path / "svc", teacher_dir, "services.teacher.mode=process",
                            f"services.teacher.transport={transport}"), **QUIET)
    assert _same(_weights(tmp_path / "inline"), _weights(tmp_path / "svc"))
    keys = ("loss", "reverse_kl", "overlap")
    assert [[r[k] for k in keys] for r in _log(tmp_path / "inline")] == [[r[k] for k in keys] for r in _log(tmp_path / "svc")]
    (stats,) = rec["train"]["services"]["teachers"].values()
    assert stats["transport"] == transport and stats["tokens"] > 0
    assert rec["data"]["teacher"]["service"] == "process"


def test_topk_transport_at_k_equal_V_is_the_full_loss(tiny_run_config, tmp_path, teacher_dir, tokenizer):
    V = len(tokenizer)
    run_training(_opd(tiny_run_config, tmp_path / "inline", teacher_dir), **QUIET)
    rec = run_training(_opd(tiny_run_config, tmp_path / "topk", teacher_dir, "services.teacher.mode=process",
                            "services.teacher.transport=topk", f"services.teacher.top_k={V}"), **QUIET)
    a, b = _log(tmp_path / "inline"), _log(tmp_path / "topk")
    for ra, rb in zip(a, b):
        assert rb["reverse_kl_topk"] == pytest.approx(ra["reverse_kl"], rel=1e-5, abs=1e-6)
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5, abs=1e-6)
    (stats,) = rec["train"]["services"]["teachers"].values()
    assert stats["bytes_per_token"] == 8 * V + 8


def test_topk_transport_ships_a_lower_bound_and_learns(tiny_run_config, tmp_path, teacher_dir):
    rec = run_training(_opd(tiny_run_config, tmp_path / "k4", teacher_dir, "services.teacher.mode=process",
                            "services.teacher.transport=topk", "services.teacher.top_k=4", method="full",
                            train__steps=12, train__warmup_steps=0, train__schedule="constant"), **QUIET)
    log = _log(tmp_path / "k4")
    first, last = (sum(r["reverse_kl_topk"] for r in part) / 3 for part in (log[:3], log[-3:]))
    assert last < 0.85 * first, (first, last)  # measured: 10.63 -> 7.69 nats/token (k = 4)
    assert all(0 <= r["overlap"] <= 1 and 0 < r["teacher_mass"] <= 1 + 1e-6 for r in log)
    (stats,) = rec["train"]["services"]["teachers"].values()
    assert stats["bytes_per_token"] == 8 * 4 + 8


def test_teacher_with_another_tokenizer_is_refused_before_any_service_starts(tiny_run_config, tmp_path,
                                                                               other_tokenizer_teacher, monkeypatch):
    from arena.services import channel

    def no_start(*a, **kw):
        raise AssertionError("a service process was started for a refused teacher")

    monkeypatch.setattr(channel.ProcessChannel, "__init__", no_start)
    with pytest.raises(ArenaError, match="different tokenizers"):
        run_training(_opd(tiny_run_config, tmp_path / "run", other_tokenizer_teacher, "services.teacher.mode=process"),
                     **QUIET)
    assert not (tmp_path / "run").exists()


def test_killed_teacher_is_restarted_and_the_result_unchanged(tiny_run_config, tmp_path, teacher_dir, monkeypatch):
    from arena.services.teacher_service import RemoteTeacher

    sets = ("services.teacher.mode=process",)
    run_training(_opd(tiny_run_config, tmp_path / "clean", teacher_dir, *sets), **QUIET)
    killed = _kill_after(monkeypatch, RemoteTeacher, "score", at_step=0)
    rec = run_training(_opd(tiny_run_config, tmp_path / "killed", teacher_dir, *sets), **QUIET)
    assert len(killed) == 1 and rec["train"]["services"]["teachers"][str(teacher_dir)]["restarts"] == 1
    assert _same(_weights(tmp_path / "clean"), _weights(tmp_path / "killed"))


def test_mopd_teachers_as_services_equal_in_process(tiny_run_config, tmp_path, teacher_dir):
    sets = (f"objective.teachers={{'+': '{teacher_dir}', '-': '{teacher_dir}', '*': '{teacher_dir}'}}",
            "objective.domain_key=op", "objective.max_new_tokens=6")
    kw = dict(objective="mopd", method="lora", train__steps=2, train__lr=1e-2, probe__heldout=0, train__threads=1)
    run_training(tiny_run_config(*sets, out=str(tmp_path / "inline"), **kw), **QUIET)
    rec = run_training(tiny_run_config(*sets, "services.teacher.mode=process", "services.teacher.transport=topk",
                                       "services.teacher.top_k=8", out=str(tmp_path / "svc"), **kw), **QUIET)
    # MOPD reads only log π_T(y_t), which the top-k form ships exactly: the same run
    assert _same(_weights(tmp_path / "inline"), _weights(tmp_path / "svc"))
    assert set(rec["train"]["services"]["teachers"]) == {str(teacher_dir)}


def test_async_rollouts_and_teacher_service_together_for_opd(tiny_run_config, tmp_path, teacher_dir):
    sets = ("services.rollout.mode=process", "services.teacher.mode=process", "objective.estimator=sampled-token")
    run_training(_opd(tiny_run_config, tmp_path / "inline", teacher_dir, "objective.estimator=sampled-token"), **QUIET)
    run_training(_opd(tiny_run_config, tmp_path / "both", teacher_dir, *sets), **QUIET)
    assert _same(_weights(tmp_path / "inline"), _weights(tmp_path / "both"))
    stale = run_training(_opd(tiny_run_config, tmp_path / "stale", teacher_dir, *sets,
                              "services.rollout.max_staleness=1"), **QUIET)
    assert stale["status"] == "done" and [r["staleness"] for r in _log(tmp_path / "stale")] == [0, 1, 1]


# -- config ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sets,field", [
    (("services.rollout.mode=proces",), "services.rollout.mode"),
    (("services.rollout.max_staleness=1",), "services.rollout.max_staleness"),
    (("services.rollout.max_staleness=-1", "services.rollout.mode=process"), "services.rollout.max_staleness"),
    (("services.teacher.transport=topk",), "services.teacher.transport"),
    (("services.max_restarts=-1",), "services.max_restarts"),
    (("services.rollout.cpus=[]", "services.rollout.mode=process"), "services.rollout.cpus"),
])
def test_bad_services_fields_are_named(tiny_run_config, sets, field):
    with pytest.raises(ConfigError) as e:
        tiny_run_config(*GRPO, *sets, objective="grpo")
    assert e.value.field == field


def test_services_need_an_objective_that_uses_them(tiny_run_config, teacher_dir):
    with pytest.raises(ConfigError, match="samples no rollouts") as e:
        tiny_run_config("services.rollout.mode=process", objective="sft")
    assert e.value.field == "services.rollout.mode"
    with pytest.raises(ConfigError, match="no external teacher"):
        tiny_run_config(*GRPO, "services.teacher.mode=process", objective="grpo")
    with pytest.raises(ConfigError, match="whole distribution") as e:
        tiny_run_config(f"objective.teacher={teacher_dir}", "services.teacher.mode=process",
                        "services.teacher.transport=topk", objective="gkd")
    with pytest.raises(ConfigError, match="equal services.teacher.top_k") as e:
        tiny_run_config(f"objective.teacher={teacher_dir}", "objective.top_k=8", "services.teacher.mode=process",
                        "services.teacher.transport=topk", objective="opd")


def test_default_services_leave_the_config_and_run_id_unchanged(tiny_run_config):
    from arena.experiment import config_fingerprint

    cfg = tiny_run_config(*GRPO, objective="grpo")
    assert "services" not in cfg.to_dict()
    moved = tiny_run_config(*GRPO, "services.rollout.mode=process", objective="grpo")
    assert moved.to_dict()["services"]["rollout"]["mode"] == "process"
    assert config_fingerprint(moved) != config_fingerprint(cfg)


def test_cli_bad_service_mode_exits_2_naming_the_field(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "arena", "train", "--set", "model.name=tiny", "--set", "objective.name=grpo",
                        "--set", "services.rollout.mode=actor", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "services.rollout.mode" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()


# -- the same config on Ray ------------------------------------------------------------------------

@pytest.fixture
def local_ray(monkeypatch):
    ray = pytest.importorskip("ray")
    import shutil

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    tmp = f"/tmp/ray-{os.getpid()}"  # short: ray's socket paths must stay under 107 characters
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def test_ray_actors_give_the_process_results_and_restart(tiny_run_config, tmp_path, teacher_dir, local_ray, monkeypatch):
    from arena.services.rollout_worker import AsyncRollouts

    sets = ("services.rollout.max_staleness=1", "objective.estimator=sampled-token")
    proc = ("services.rollout.mode=process", "services.teacher.mode=process")
    ray_ = ("services.rollout.mode=ray", "services.teacher.mode=ray")
    run_training(_opd(tiny_run_config, tmp_path / "proc", teacher_dir, *sets, *proc), **QUIET)
    killed = []
    real = AsyncRollouts.rollouts

    def kill_actor(self, step, plan):  # an actor death, as a lost node would cause
        out = real(self, step, plan)
        if step == 0 and not killed:
            killed.append(step)
            local_ray.kill(self.channel.actor, no_restart=True)
        return out

    monkeypatch.setattr(AsyncRollouts, "rollouts", kill_actor)
    rec = run_training(_opd(tiny_run_config, tmp_path / "ray", teacher_dir, *sets, *ray_), **QUIET)
    assert rec["train"]["services"]["rollout"]["mode"] == "ray"
    assert rec["train"]["services"]["rollout"]["restarts"] == 1
    assert _same(_weights(tmp_path / "proc"), _weights(tmp_path / "ray"))


# -- in a sweep --------------------------------------------------------------------------------------

def test_sweep_objective_entry_carries_services_and_a_service_failure_fails_only_its_run(tmp_path):
    from arena.records import read_run_record
    from arena.sweeps.expand import expand
    from arena.sweeps.load import sweep_config_from_dict
    from runners import run_sweep

    grpo = {"name": "grpo", "n_samples": 2, "max_new_tokens": 6, "label": "grpo-async",
            "services": {"rollout": {"mode": "process", "max_staleness": 1}}}
    broken = {**grpo, "label": "grpo-broken", "backend": "vllm"}  # the worker's engine cannot start on CPU
    cfg = sweep_config_from_dict({
        "name": "svc", "model": "tiny", "targets": [{"name": "arith", "n_train": 256}],
        "methods": [{"name": "lora", "lr": 1e-2}], "objectives": [broken, grpo, "sft"],
        "budget": {"steps": 2, "batch_size": 4, "seq_len": 64},
        "train": {"precision": "fp32", "device": "cpu", "warmup_steps": 1, "threads": 1},
        "probe": {"heldout": 4, "greedy": 0}, "eval": {"enabled": False}, "diagnostics": {"enabled": False},
        "out": str(tmp_path / "svc")})
    specs = expand(cfg)
    assert [s.config.get("services", {}).get("rollout", {}).get("mode") for s in specs] == ["process", "process", None]
    run_sweep(cfg)
    status = {s.run_id: read_run_record(tmp_path / "svc" / s.run_id) for s in specs}
    broken_rec, ok_rec, sft_rec = (status[s.run_id] for s in specs)
    assert broken_rec.status == "failed" and "rollout worker failed" in broken_rec.error
    assert ok_rec.status == "done" and ok_rec.train["services"]["rollout"]["max_staleness"] == 1
    assert sft_rec.status == "done"
