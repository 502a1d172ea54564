"""The Ray executor against a local Ray instance started by the test: one task per run."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from arena.sweeps.load import sweep_config_from_dict
from runners import state as S

ray = pytest.importorskip("ray")


@pytest.fixture
def local_ray(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    tmp = f"/tmp/ray-{os.getpid()}"  # short: ray's socket paths must stay under 107 characters
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def test_two_run_sweep_on_local_ray(tmp_path, local_ray):
    from runners import run_sweep

    cfg = sweep_config_from_dict({
        "name": "ray", "model": "tiny", "targets": [{"name": "arith", "n_train": 256}],
        "methods": [{"name": "lora", "lr": 1e-2}, {"name": "vera", "rank": 8}],
        "budget": {"steps": 2, "batch_size": 4, "seq_len": 64},
        "train": {"precision": "fp32", "device": "cpu", "warmup_steps": 1, "threads": 1},
        "probe": {"heldout": 4, "greedy": 0}, "eval": {"enabled": False}, "diagnostics": {"enabled": False},
        "out": str(tmp_path / "ray"),
    })
    lines = []
    summary = run_sweep(cfg, executor="ray", ray_address="auto", progress=False, log=lines.append)
    assert summary.ok and len(summary.completed) == 2, summary.format() + "\n" + "\n".join(lines)
    assert "ray executor" in lines[0]
    out = tmp_path / "ray"
    for rid in summary.completed:
        rec = json.loads((out / rid / "record.json").read_text())
        assert rec["status"] == "done" and rec["sweep"]["status"] == "complete"
        assert "(ray)" in S.log_path(out, rid).read_text()  # the worker ran inside a Ray task
    starts = [e for e in S.read_events(out) if e["event"] == "start"]
    assert {e["executor"] for e in starts} == {"ray"} and len(starts) == 2
    again = run_sweep(cfg, executor="ray", progress=False, log=lines.append)
    assert not again.todo and "all 2 runs finished" in again.format()
    assert ray.is_initialized()  # a Ray connection the caller made is left to the caller


def test_a_sharded_run_asks_ray_for_its_gpus_and_trains_under_torchrun(tmp_path, local_ray):
    """runner.gpus_per_run: the run's Ray task reserves that many GPUs (on CUDA runs), and inside the
    task the worker trains the run over that many torchrun ranks (here: CPU processes)."""
    from runners import run_sweep
    from runners.driver import _task

    d = {"name": "rs", "model": "tiny", "targets": [{"name": "arith", "n_train": 256}], "methods": ["lora"],
         "budget": {"steps": 2, "batch_size": 2, "grad_accum": 2, "seq_len": 64},
         "train": {"precision": "fp32", "device": "cpu", "warmup_steps": 1},
         "probe": {"heldout": 4, "greedy": 0}, "eval": {"enabled": False}, "diagnostics": {"enabled": False},
         "runner": {"gpus_per_run": {"default": 1, "tiny": 2}}, "out": str(tmp_path / "rs")}
    on_gpu = sweep_config_from_dict({**d, "train": {**d["train"], "device": "cuda"}})
    from runners.driver import plan_sweep

    (spec,) = plan_sweep(on_gpu)[1]
    t = _task(on_gpu, tmp_path, spec, None)
    assert t.gpus == 2 and t.env["ARENA_SWEEP_RANKS"] == "2"  # Ray's num_gpus for the task
    summary = run_sweep(sweep_config_from_dict(d), executor="ray", ray_address="auto", progress=False,
                        log=lambda m: None)
    assert summary.ok and len(summary.completed) == 1, summary.format()
    rec = json.loads((tmp_path / "rs" / summary.completed[0] / "record.json").read_text())
    assert rec["status"] == "done" and rec["train"]["world_size"] == 2
