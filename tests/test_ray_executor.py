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
