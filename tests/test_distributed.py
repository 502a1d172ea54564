"""Sharded training (FSDP2 over gloo, 2 CPU processes) against one process with the same global batch.

Ranks are real torchrun processes: `arena train --nproc 2` (the user's command) or torchrun on
tests/dist_rank.py (the same CLI with the tests' GRPO reward). With one shared seed per
micro-batch for dropout and for sampling, the two runs see the same data, masks and rollouts; the
gradients differ only in the order of fp32 sums, so losses and weights agree to 1e-5 (measured:
fp32 LoRA bit-identical, bf16-autocast full FT 4e-9).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from arena.config import dump_yaml
from arena.experiment import run_training

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-5
QUIET = {"log": lambda msg: None}
SFT = ("train.steps=4", "train.grad_accum=2", "train.batch_size=2", "train.save_every=2", "train.keep_checkpoints=0",
       "probe.heldout=4")
GRPO = ("objective.n_samples=2", "objective.max_new_tokens=8", "objective.reward=test_digits", "train.steps=3",
        "train.grad_accum=2", "train.batch_size=2", "train.lr=1e-2", "probe.heldout=4")

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two ranks need two cores")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "ARENA_DIST_TIMEOUT_S": "60", "OMP_NUM_THREADS": "1"}


def _arena(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arena", *args], env=_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def _torchrun(cfg, timeout: int = 240) -> subprocess.CompletedProcess:
    path = Path(cfg.out).parent / f"{Path(cfg.out).name}.yaml"
    path.write_text(dump_yaml(cfg))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--max-restarts",
           "0", str(REPO / "tests" / "dist_rank.py"), "train", "--config", str(path)]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _launch(cfg, *extra: str) -> subprocess.CompletedProcess:
    path = Path(cfg.out).parent / f"{Path(cfg.out).name}.yaml"
    path.write_text(dump_yaml(cfg))
    return _arena("train", "--config", str(path), "--nproc", "2", *extra)


def _log(run) -> list[dict]:
    return [json.loads(x) for x in (Path(run) / "train_log.jsonl").read_text().splitlines() if x.strip()]


def _weights(run) -> dict:
    return load_file(str(Path(run) / "final" / "trainable.safetensors"))


def _assert_same_run(a, b, keys=("loss", "grad_norm")) -> None:
    la, lb = _log(a), _log(b)
    assert [r["step"] for r in la] == [r["step"] for r in lb]
    for ra, rb in zip(la, lb):
        for k in keys:
            assert abs(ra[k] - rb[k]) <= TOL * max(1.0, abs(ra[k])), (k, ra["step"], ra[k], rb[k])
    wa, wb = _weights(a), _weights(b)
    assert sorted(wa) == sorted(wb)
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst <= TOL, worst


# VeRA: A, B shared by every layer. Sharded runs take the stock [n, V] logits (FSDP2 gathers the head only
# in the model's forward), so under bf16 the one-process reference does too: with `fused_ce` the head's
# gradient is rounded to bf16 in another place (0.2% on the first grad norm), which is not what this compares.
@pytest.mark.parametrize("method,sets", [("lora", ()), ("full", ("train.precision=bf16-autocast", "train.fused_ce=false")),
                                         ("vera", ())])
def test_two_ranks_train_like_one_process(tmp_path, tiny_run_config, method, sets):
    one = tiny_run_config(*SFT, *sets, method=method, out=str(tmp_path / "one"))
    run_training(one, **QUIET)
    two = tiny_run_config(*SFT, *sets, method=method, out=str(tmp_path / "two"))
    p = _launch(two)
    assert p.returncode == 0, p.stdout[-3000:]
    _assert_same_run(one.out, two.out)
    rec = json.loads((tmp_path / "two" / "record.json").read_text())
    assert rec["status"] == "done" and rec["train"]["world_size"] == 2
    # every later stage reads the same layout: a full-tensor checkpoint beside the DCP shards
    ck = tmp_path / "two" / "checkpoints" / "step-000002"
    assert (ck / "dcp" / ".metadata").is_file() and (ck / "trainable.safetensors").is_file()
    assert sorted(load_file(str(ck / "trainable.safetensors"))) == sorted(_weights(one.out))
    # the record's probes (run on each rank's gathered copy) equal the one-process ones
    rone = json.loads((tmp_path / "one" / "record.json").read_text())
    assert abs(rec["probes"]["tuned"]["target_nll"]["nll"] - rone["probes"]["tuned"]["target_nll"]["nll"]) < 1e-4


@pytest.mark.parametrize("packing", ["padding_free", "rows"])
def test_activation_checkpointing_recomputes_the_same_step(tmp_path, tiny_run_config, packing):
    """Recomputation in backward (with LoRA dropout, so the RNG replay counts) changes no loss, no
    gradient, no weight, in one process and on two sharded ranks."""
    sets = (*SFT, "method.dropout=0.1", f"train.packing={packing}")
    plain = tiny_run_config(*sets, method="lora", out=str(tmp_path / "plain"))
    run_training(plain, **QUIET)
    ckpt = tiny_run_config(*sets, "train.activation_checkpointing=true", method="lora", out=str(tmp_path / "ckpt"))
    run_training(ckpt, **QUIET)
    _assert_same_run(plain.out, ckpt.out)
    if packing == "padding_free":
        two = tiny_run_config(*sets, "train.activation_checkpointing=true", method="lora", out=str(tmp_path / "two"))
        p = _launch(two)
        assert p.returncode == 0, p.stdout[-3000:]
        _assert_same_run(plain.out, two.out)


@pytest.mark.parametrize("method,sets", [("lora", ()), ("full", ("train.lr=1e-3",))])
def test_grpo_two_ranks_sample_the_same_rollouts(tmp_path, tiny_run_config, method, sets):
    from tests.test_objectives_rl import REWARDS  # noqa: F401 — registers test_digits in this process

    one = tiny_run_config(*GRPO, *sets, objective="grpo", method=method, out=str(tmp_path / "one"))
    run_training(one, **QUIET)
    # (the policy-gradient loss is ~0 on-policy, its gradient is not)
    assert any(r["grad_norm"] > 0 for r in _log(one.out)), "the test reward must give a gradient"
    two = tiny_run_config(*GRPO, *sets, objective="grpo", method=method, out=str(tmp_path / "two"))
    p = _torchrun(two)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    _assert_same_run(one.out, two.out, keys=("loss", "grad_norm", "reward_mean", "response_length"))


@pytest.mark.parametrize("objective,sets", [
    ("sdpo", ()),  # EMA self-teacher
    ("rlsd", ("objective.teacher_sync_every=1",)),  # synced, refreshed after every step
    ("rlrt", ()),  # the current weights
])
def test_self_distillation_two_ranks_like_one_process(tmp_path, tiny_run_config, objective, sets):
    """The self-teacher scores only rollouts with a demonstration, a different number on each rank:
    under sharding it scores inside the gathered rollout block (no collective), with its shadow
    weights swapped into the whole parameters there; the run equals one process."""
    from tests.test_objectives_rl import REWARDS  # noqa: F401 — registers test_digits in this process

    roll = ("objective.n_samples=4", "objective.max_new_tokens=8", "objective.reward=test_digits", "train.steps=3",
            "train.grad_accum=2", "train.batch_size=2", "train.lr=1e-2", "probe.heldout=4", *sets)
    one = tiny_run_config(*roll, objective=objective, method="lora", out=str(tmp_path / "one"))
    run_training(one, **QUIET)
    log = _log(one.out)
    assert any(r.get("teacher_share", 0) > 0 for r in log), "some rollouts must get a teacher"
    two = tiny_run_config(*roll, objective=objective, method="lora", out=str(tmp_path / "two"))
    p = _torchrun(two)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    _assert_same_run(one.out, two.out, keys=("loss", "grad_norm", "reward_mean", "teacher_share"))


def test_opd_two_ranks_distil_like_one_process(tmp_path, tiny_run_config):
    """OPD's teacher is its own unsharded model on every rank: the same rollouts, teacher scores and
    update as one process."""
    sets = ("objective.teacher=tiny", "objective.n_samples=2", "objective.max_new_tokens=8", "train.steps=3",
            "train.grad_accum=2", "train.batch_size=2", "train.lr=1e-2", "probe.heldout=4")
    one = tiny_run_config(*sets, objective="opd", method="lora", out=str(tmp_path / "one"))
    run_training(one, **QUIET)
    assert any(r["grad_norm"] > 0 for r in _log(one.out))
    p = _launch(tiny_run_config(*sets, objective="opd", method="lora", out=str(tmp_path / "two")))
    assert p.returncode == 0, p.stdout[-3000:]
    _assert_same_run(one.out, tmp_path / "two")


def _cut_after(run: Path, dest: Path, step: int) -> Path:
    """A copy of a finished run as a kill just after checkpoint `step` leaves it."""
    shutil.copytree(run, dest)
    for p in ("final", "record.json"):
        shutil.rmtree(dest / p) if (dest / p).is_dir() else (dest / p).unlink()
    for ck in (dest / "checkpoints").iterdir():
        if int(ck.name.split("-")[1]) > step:
            shutil.rmtree(ck)
    return dest


def test_resume_a_two_rank_checkpoint_on_one_and_on_two_ranks(tmp_path, tiny_run_config):
    full = tiny_run_config(*SFT, method="lora", out=str(tmp_path / "full"))
    assert _launch(full).returncode == 0
    on_one = _cut_after(tmp_path / "full", tmp_path / "on-one", 2)
    run_training(tiny_run_config(*SFT, method="lora", out=str(on_one)), **QUIET)
    on_two = _cut_after(tmp_path / "full", tmp_path / "on-two", 2)
    p = _launch(tiny_run_config(*SFT, method="lora", out=str(on_two)))
    assert p.returncode == 0, p.stdout[-3000:]
    for run in (on_one, on_two):
        rec = json.loads((run / "record.json").read_text())
        assert rec["train"]["resumed_from"] == 2
        _assert_same_run(tmp_path / "full", run)


def test_resume_a_one_process_checkpoint_on_two_ranks(tmp_path, tiny_run_config):
    one = tiny_run_config(*SFT, method="lora", out=str(tmp_path / "one"))
    run_training(one, **QUIET)
    cut = _cut_after(tmp_path / "one", tmp_path / "cut", 2)
    p = _launch(tiny_run_config(*SFT, method="lora", out=str(cut)))
    assert p.returncode == 0, p.stdout[-3000:]
    assert json.loads((cut / "record.json").read_text())["train"]["resumed_from"] == 2
    _assert_same_run(tmp_path / "one", cut)


def _tree(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_bad_launches_exit_2_and_write_nothing(tmp_path, tiny_run_config):
    cfg = tiny_run_config(*SFT, method="lora", out=str(tmp_path / "run"))
    cases = [
        (["--nproc", str((os.cpu_count() or 1) + 1)], "--nproc"),
        (["--nproc", "2", "--set", "train.grad_accum=3"], "train.grad_accum"),
        (["--nproc", "2", "--method", "adalora"], "method.name"),
    ]
    (tmp_path / "c.yaml").write_text(dump_yaml(cfg))
    for args, field in cases:
        p = _arena("train", "--config", str(tmp_path / "c.yaml"), *args)
        assert p.returncode == 2 and field in p.stderr and "Traceback" not in p.stderr, (args, p.stderr[-2000:])
        assert not (tmp_path / "run").exists()
    # a sharded checkpoint written by another config: refused before any rank starts, nothing changed
    assert _launch(cfg).returncode == 0
    cut = _cut_after(tmp_path / "run", tmp_path / "cut", 2)
    state = cut / "checkpoints" / "step-000002" / "state.json"
    st = json.loads(state.read_text())
    state.write_text(json.dumps({**st, "config_fingerprint": "0" * 64}))
    before = _tree(cut)
    p = _launch(tiny_run_config(*SFT, method="lora", out=str(cut)))
    assert p.returncode == 2 and "different config" in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert _tree(cut) == before


def test_a_killed_rank_fails_the_run_with_its_reason(tmp_path, tiny_run_config):
    import psutil

    cfg = tiny_run_config("train.steps=400", "train.grad_accum=2", "train.batch_size=2", method="lora",
                          out=str(tmp_path / "run"))
    path = tmp_path / "run.yaml"
    path.write_text(dump_yaml(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "arena", "train", "--config", str(path), "--nproc", "2"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    log = tmp_path / "run" / "train_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and log.read_text().strip()):
        time.sleep(0.5)
    assert log.is_file(), "the ranks never started training"
    ranks = [c for c in psutil.Process(proc.pid).children(recursive=True) if "LOCAL_RANK" in c.environ()
             and c.environ().get("LOCAL_RANK") == "1"]
    assert ranks, "no rank 1 process found"
    ranks[0].kill()
    out, _ = proc.communicate(timeout=120)  # bounded: torchrun stops rank 0 and exits
    assert proc.returncode == 1, out[-2000:]
    rec = json.loads((tmp_path / "run" / "record.json").read_text())
    assert rec["status"] == "failed" and "rank 1: killed by SIGKILL" in rec["error"], rec.get("error")
    assert "recorded in" in out


def _sweep(tmp_path: Path, name: str, runner: dict, budget: dict) -> Path:
    import yaml

    d = {"name": name, "out": str(tmp_path / name), "model": "tiny", "methods": ["lora"],
         "targets": [{"name": "arith", "n_train": 256}], "budget": {"steps": 2, "batch_size": 2, "seq_len": 64, **budget},
         "train": {"precision": "fp32", "device": "cpu", "warmup_steps": 1},
         "probe": {"heldout": 4, "greedy": 0}, "eval": {"enabled": False}, "diagnostics": {"enabled": False},
         "runner": runner}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def test_a_sweep_trains_each_run_on_gpus_per_run_ranks(tmp_path):
    """runner.gpus_per_run: the local executor's worker trains the run under torchrun (on CPU the ranks
    are processes over the cores) and the run completes with the usual record and weights."""
    p = _arena("sweep", str(_sweep(tmp_path, "two", {"gpus_per_run": {"default": 1, "tiny": 2}},
                                     {"grad_accum": 2})), "--no-progress", timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = [d for d in (tmp_path / "two").iterdir() if (d / "record.json").is_file()]
    rec = json.loads((run / "record.json").read_text())
    assert rec["status"] == "done" and rec["train"]["world_size"] == 2 and rec["sweep"]["status"] == "complete"
    assert (run / "final" / "trainable.safetensors").is_file()


@pytest.mark.parametrize("runner,budget,field", [
    ({"gpus_per_run": 2}, {"grad_accum": 3}, "train.grad_accum"),
    ({"gpus_per_run": {"qwen": 2}}, {"grad_accum": 2}, "runner.gpus_per_run.qwen"),
    ({"gpus_per_run": 2, "jobs": 2}, {"grad_accum": 2}, "runner.jobs"),
    ({"gpus_per_run": 0}, {"grad_accum": 2}, "runner.gpus_per_run"),
])
def test_a_sweep_refuses_ranks_that_cannot_work_before_any_run(tmp_path, runner, budget, field):
    p = _arena("sweep", str(_sweep(tmp_path, "bad", runner, budget)), "--no-progress")
    assert p.returncode == 2 and field in p.stderr and "Traceback" not in p.stderr, p.stdout + p.stderr
    assert not (tmp_path / "bad").exists()


def test_two_nodes_rendezvous_over_loopback_and_train_like_one_process(tmp_path, tiny_run_config):
    """--nnodes 2 --rdzv-endpoint: two launchers (the same command on each "node") meet through
    torchrun's c10d rendezvous; the run equals one process."""
    import socket

    one = tiny_run_config(*SFT, method="lora", out=str(tmp_path / "one"))
    run_training(one, **QUIET)
    two = tiny_run_config(*SFT, method="lora", out=str(tmp_path / "two"))
    path = tmp_path / "two.yaml"
    path.write_text(dump_yaml(two))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "arena", "train", "--config", str(path), "--nproc", "1", "--nnodes", "2",
           "--rdzv-endpoint", f"127.0.0.1:{port}"]
    nodes = [subprocess.Popen([*cmd, "--node-rank", str(r)], env=_env(), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    outs = [n.communicate(timeout=240)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(o[-2000:] for o in outs)
    assert json.loads((tmp_path / "two" / "record.json").read_text())["train"]["world_size"] == 2
    _assert_same_run(one.out, two.out)
