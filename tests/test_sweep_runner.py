"""Sweep runner on real tiny runs: failure isolation, kill -9 of the driver and resume, exactly-once
completion, idempotent re-runs, killed workers, stage failures and stage-only resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from arena.sweeps.expand import expand
from arena.sweeps.load import sweep_config_from_dict
from runners import state as S

TINY = {
    "model": "tiny",
    "targets": [{"name": "arith", "n_train": 256}],
    "budget": {"steps": 3, "batch_size": 4, "seq_len": 64},
    "train": {"precision": "fp32", "device": "cpu", "warmup_steps": 1, "threads": 1},
    "probe": {"heldout": 8, "greedy": 0},
    "eval": {"enabled": False},
    "diagnostics": {"enabled": False},
}


def sweep_yaml(tmp_path: Path, name: str, **changes) -> Path:
    d = {"name": name, **TINY, "out": str(tmp_path / name), **changes}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def arena(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arena.cli", *args], capture_output=True, text=True, timeout=300, **kw)


def terminal_events(out: Path) -> dict:
    ends = {}
    for e in S.read_events(out):
        if e["event"] in (S.COMPLETE, S.FAILED):
            ends.setdefault(e["run_id"], []).append(e["event"])
    return ends


def test_kill9_driver_then_resume_finishes_each_run_exactly_once(tmp_path):
    # three runs; the last one fails deterministically (OFT block 48 does not divide the tiny model's width)
    cfg = sweep_yaml(tmp_path, "kill", methods=[{"name": "full", "lr": 1e-3}, {"name": "lora", "lr": 1e-2},
                                                {"name": "oft", "block_size": 48, "label": "oft-bad"}])
    out = tmp_path / "kill"
    proc = subprocess.Popen([sys.executable, "-m", "arena.cli", "sweep", str(cfg), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while not list(out.glob("*/record.json")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "no record appeared"
        time.sleep(0.05)
    proc.kill()  # SIGKILL of the driver; its worker dies with it (PR_SET_PDEATHSIG)
    proc.wait()
    first = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/record.json")}
    assert len(first) == 1

    r = arena("sweep", str(cfg), "--no-progress")
    assert r.returncode == 1, r.stdout + r.stderr  # one run failed
    assert "1 failed" in r.stdout and "oft-bad" in r.stdout and "busy" not in r.stdout
    runs = {s.run_id: s for s in expand(sweep_config_from_dict(yaml.safe_load(cfg.read_text())))}
    states = {rid: S.run_state(out, s).status for rid, s in runs.items()}
    assert sorted(states.values()) == [S.COMPLETE, S.COMPLETE, S.FAILED]
    for rid, s in runs.items():
        rec = json.loads((out / rid / "record.json").read_text())  # every record is whole JSON
        if s.label == "oft-bad":
            assert rec["status"] == "failed" and "block_size" in rec["error"] and not rec["retryable"]
        else:
            assert rec["status"] == "done" and rec["sweep"]["status"] == "complete"
            steps = [json.loads(ln)["step"] for ln in (out / rid / "train_log.jsonl").read_text().splitlines()]
            assert steps == [1, 2, 3]  # trained once: a killed attempt's steps are not duplicated
    # the run finished before the kill was not retrained: its training section is untouched
    (rid0, rec0), = first.items()
    rec0_after = json.loads((out / rid0 / "record.json").read_text())
    assert rec0_after["created"] == rec0["created"] and rec0_after["train"] == rec0["train"]
    ends = terminal_events(out)
    assert all(len(v) == 1 for v in ends.values()), ends  # no run ended twice
    for rid, s in runs.items():
        want = [S.FAILED if s.label == "oft-bad" else S.COMPLETE]
        # the first run may have completed in the killed invocation after its record appeared but before
        # the driver logged its end; the second invocation then finds it complete and leaves it alone
        assert ends.get(rid, want if rid == rid0 else None) == want, (rid, ends)

    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/record.json")}
    r = arena("sweep", str(cfg), "--no-progress")
    assert r.returncode == 0 and "all 3 runs finished; nothing to do" in r.stdout
    assert "--retry-failed" in r.stdout
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.glob("*/record.json")}  # nothing rewritten
    assert terminal_events(out) == ends  # the no-op invocation started nothing


def test_kill9_of_a_worker_fails_that_run_only_and_is_retried(tmp_path):
    import re

    cfg = sweep_yaml(tmp_path, "wk", methods=[{"name": "lora", "lr": 1e-2}, {"name": "vera", "rank": 8}])
    out = tmp_path / "wk"
    proc = subprocess.Popen([sys.executable, "-m", "arena.cli", "sweep", str(cfg), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    pid = None
    while pid is None:
        logs = list((out / ".sweep" / "logs").glob("lora-*.log")) if (out / ".sweep" / "logs").is_dir() else []
        m = re.search(r"\(pid (\d+)\)", logs[0].read_text()) if logs else None
        pid = int(m.group(1)) if m else None
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    stdout, _ = proc.communicate(timeout=180)
    assert proc.returncode == 1 and "1 interrupted" in stdout and "SIGKILL" in stdout, stdout
    assert "done    vera" in stdout  # the sweep went on with the next run
    r = arena("sweep", str(cfg), "--no-progress")
    assert r.returncode == 0 and "1 run(s) completed now, 1 before" in r.stdout, r.stdout + r.stderr
    ev = [(e["run_id"].split("-")[0], e["event"]) for e in S.read_events(out) if e["event"] != "start"]
    assert sorted(ev) == [("lora", S.COMPLETE), ("lora", S.INTERRUPTED), ("vera", S.COMPLETE)]


def _spec_and_out(tmp_path, **changes):
    cfg = sweep_config_from_dict({"name": "w", **TINY, "out": str(tmp_path / "w"), **changes})
    runs = expand(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True)
    S.write_plan(out, cfg.to_dict(), runs)
    return cfg, runs, out


def test_killed_worker_is_recorded_interrupted_and_retried(tmp_path):
    from runners.driver import record_outcome
    from runners.local import Outcome

    cfg, (spec,), out = _spec_and_out(tmp_path, methods=[{"name": "lora", "lr": 1e-2}])
    status, err = record_outcome(out, spec, Outcome(spec.run_id, -signal.SIGKILL, 3.0))
    assert status == S.INTERRUPTED and "SIGKILL" in err
    rec = json.loads((out / spec.run_id / "record.json").read_text())
    assert rec["status"] == "failed" and rec["retryable"] and rec["written_by"] == "runner"
    assert S.run_state(out, spec).status == S.INTERRUPTED  # retried by the next invocation without a flag
    status, err = record_outcome(out, spec, Outcome(spec.run_id, -signal.SIGKILL, 9.0, timed_out=True))
    assert status == S.FAILED and "timed out" in err


def test_stage_failure_then_stage_only_resume(tmp_path):
    """In-process worker: train + a failing diagnostics stage -> recorded, run failed; fixing the
    stage settings re-runs only that stage (no retraining)."""
    from runners.worker import run as run_worker

    cfg, (spec,), out = _spec_and_out(tmp_path, methods=[{"name": "lora", "lr": 1e-2}],
                                      diagnostics={"enabled": True, "modules": ["no.such.module"], "max_prompts": 2,
                                                   "max_tokens": 64})
    assert run_worker(out, spec.run_id) == 1
    rec = json.loads((out / spec.run_id / "record.json").read_text())
    assert rec["status"] == "done" and rec["sweep"]["status"] == "failed"
    assert rec["sweep"]["stages"]["diagnostics"]["status"] == "failed"
    st = S.run_state(out, spec)
    assert st.status == S.FAILED and "diagnostics" in st.detail
    trained = rec["train"]

    cfg2 = sweep_config_from_dict({"name": "w", **TINY, "out": str(out), "methods": [{"name": "lora", "lr": 1e-2}],
                                   "diagnostics": {"enabled": True, "max_prompts": 2, "max_tokens": 64}})
    (spec2,) = expand(cfg2)
    assert spec2.run_id == spec.run_id  # diagnostics settings are not part of the run id
    S.write_plan(out, cfg2.to_dict(), [spec2])
    assert S.run_state(out, spec2).todo == ("diagnostics",)
    assert run_worker(out, spec.run_id) == 0
    rec = json.loads((out / spec.run_id / "record.json").read_text())
    assert rec["train"] == trained and rec["sweep"]["status"] == "complete" and "diagnostics" in rec
    assert S.run_state(out, spec2).status == S.COMPLETE


def test_busy_run_is_left_alone(tmp_path):
    import fcntl

    from runners.worker import EXIT_BUSY, run as run_worker

    cfg, (spec,), out = _spec_and_out(tmp_path, methods=["lora"])
    lock = S.lock_path(out, spec.run_id)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        assert run_worker(out, spec.run_id) == EXIT_BUSY
    assert not (out / spec.run_id).exists()


def test_second_driver_is_refused(tmp_path):
    import fcntl

    from arena.errors import ArenaError
    from runners import run_sweep

    cfg, runs, out = _spec_and_out(tmp_path, methods=["lora"])
    meta = S.meta_dir(out)
    meta.mkdir(parents=True, exist_ok=True)
    with open(meta / "driver.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write("pid 12345")
        f.flush()
        with pytest.raises(ArenaError, match="another `arena sweep` is running"):
            run_sweep(cfg, progress=False, log=lambda m: None)


def test_local_executor_parallel_with_cache_leader(tmp_path):
    """jobs=2: the run gated on its group's leader starts only after the leader ended; an ungated
    run starts at once beside the leader."""
    from runners.local import LocalExecutor, Task

    sleep = [sys.executable, "-c", "import time; time.sleep(0.5)"]
    tasks = [Task("lead", sleep, {}, tmp_path / "lead.log"), Task("follow", sleep, {}, tmp_path / "f.log", after="lead"),
             Task("other", sleep, {}, tmp_path / "o.log")]
    events = []
    LocalExecutor(jobs=2, poll_s=0.02).run(tasks, lambda rid: events.append(("start", rid)),
                                           lambda o: events.append(("end", o.run_id, o.returncode)))
    order = [e[:2] for e in events]
    assert order[:2] == [("start", "lead"), ("start", "other")]
    assert order.index(("start", "follow")) > order.index(("end", "lead"))
    assert all(e[2] == 0 for e in events if e[0] == "end") and len(events) == 6


def test_missing_data_fails_before_any_run(tmp_path):
    from arena.errors import ArenaError
    from runners import run_sweep

    cfg = sweep_config_from_dict({"name": "nodata", **TINY, "targets": ["math"], "methods": ["lora"],
                                  "data_dir": str(tmp_path / "nothing"), "out": str(tmp_path / "nodata")})
    with pytest.raises(ArenaError, match="does not exist"):
        run_sweep(cfg, progress=False, log=lambda m: None)
    assert not (tmp_path / "nodata").exists()


def test_worker_threads_one_choice_for_training_and_stages(tmp_path):
    import torch

    from runners import stages as st

    _, runs, _ = _spec_and_out(tmp_path, methods=["lora"])
    spec = runs[0]
    before = torch.get_num_threads()
    try:
        assert st.worker_threads(None, spec, print) == 1  # the run's train.threads (TINY sets 1)
        assert st.worker_threads("2", spec, print) == 2 and torch.get_num_threads() == 2
        cfg = st.run_config(spec, tmp_path / "r", threads=2)
        assert cfg.train.threads == 2 and cfg.train.progress is False and cfg.out == str(tmp_path / "r")
        assert st.run_config(spec, tmp_path / "r").train.threads == 1  # 0: the run's own
    finally:
        torch.set_num_threads(before)


def test_ilp_stage_runs_after_training_and_resumes_stage_only(tmp_path, monkeypatch):
    """The ilp stage calls ilp_run with the settings the plan holds; a finished run that gains the
    ilp section re-runs only that stage; a skipped stage is recorded with its reason."""
    import types

    from arena.ilp.settings import IlpSettings
    from runners import stages as st
    from runners.worker import run as run_worker

    calls = []

    def fake_ilp_run(run_dir, settings, device="auto", log=print, write=True):
        calls.append((Path(run_dir).name, settings, device, write))
        return {"unlearned": {"k": 3, "n": settings.samples}}

    monkeypatch.setitem(sys.modules, "arena.ilp.run", types.SimpleNamespace(ilp_run=fake_ilp_run))
    methods = [{"name": "lora", "lr": 1e-2}]
    cfg, (spec,), out = _spec_and_out(tmp_path, methods=methods)
    assert run_worker(out, spec.run_id) == 0 and not calls
    trained = json.loads((out / spec.run_id / "record.json").read_text())["train"]

    cfg2 = sweep_config_from_dict({"name": "w", **TINY, "out": str(out), "methods": methods,
                                   "ilp": {"enabled": True, "samples": 8, "n": 2}})
    (spec2,) = expand(cfg2)
    assert spec2.run_id == spec.run_id  # ilp settings are not part of the run id
    S.write_plan(out, cfg2.to_dict(), [spec2])
    assert S.run_state(out, spec2).todo == ("ilp",)
    assert run_worker(out, spec.run_id) == 0
    (name, settings, device, write), = calls
    assert name == spec.run_id and settings == IlpSettings(samples=8, n=2) and device == "cpu" and write
    rec = json.loads((out / spec.run_id / "record.json").read_text())
    assert rec["train"] == trained and rec["sweep"]["stages"]["ilp"]["status"] == "done"
    assert rec["sweep"]["stages"]["ilp"]["unlearned"] == 3 and S.run_state(out, spec2).status == S.COMPLETE

    spec2.skipped = {"ilp": "SFT runs only (test)"}
    st.mark_skipped(out / spec.run_id, spec2)
    rec = json.loads((out / spec.run_id / "record.json").read_text())
    assert rec["sweep"]["stages"]["ilp"] == {**rec["sweep"]["stages"]["ilp"], "status": "skipped",
                                             "reason": "SFT runs only (test)"}


def test_ilp_stage_with_the_real_ilp_run(tmp_path):
    """Tiny SFT runs through the worker with the real arena.ilp, a baseline and a bucketing
    mitigation: record["ilp"] and the samples files are written, the stage is recorded done, and the
    results layer pairs the mitigation with its baseline on the same tested samples."""
    from arena.results.ilp import ilp_runs, mitigation_effects, read_samples
    from arena.results.load import load_results
    from runners.worker import run as run_worker

    cfg, runs, out = _spec_and_out(
        tmp_path, methods=[{"name": "lora", "lr": 1e-2}], objectives=["sft", {"name": "sft", "bucketing": "conflicts"}],
        train={**TINY["train"], "save_every": 1, "keep_checkpoints": 0},
        ilp={"enabled": True, "samples": 6, "n": 2, "controls": [], "batch_size": 8, "max_new_tokens": 4})
    assert len(runs) == 2
    for spec in runs:
        assert run_worker(out, spec.run_id) == 0
        rec = json.loads((out / spec.run_id / "record.json").read_text())
        assert rec["sweep"]["stages"]["ilp"]["status"] == "done" and rec["ilp"]["unlearned"]["n"] == 6
    res = load_results(out)
    rows = ilp_runs(res).set_index("mitigation")
    assert sorted(rows.index) == ["bucketing", "none"] and all(len(read_samples(res, k)) == 6 for k in rows["key"])
    (eff,) = mitigation_effects(res).to_dict("records")
    assert eff["n"] == 6 and eff["pairs"] == 1 and eff["note"] is None
    assert eff["effect"] == pytest.approx(rows.loc["bucketing", "fraction"] - rows.loc["none", "fraction"])  # same 6
