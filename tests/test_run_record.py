"""The typed run record: from_dict/to_dict round-trip record.json exactly (keys, values, order,
nulls, unknown keys), and its writers — run_training and the sweep worker's failure writer — write
the file format the readers expect."""

from __future__ import annotations

import json

import pytest

from arena.records import read_run_record, write_record
from arena.results.flatten import flatten
from arena.results.run_record import SCHEMA_VERSION, RunRecord
from dashboard.synthetic import make_record


def _round_trip(d: dict) -> None:
    back = RunRecord.from_dict(d).to_dict()
    assert back == d and list(back) == list(d)
    assert json.dumps(back, indent=2) == json.dumps(d, indent=2)


def test_round_trip_of_a_full_record():
    _round_trip(make_record("lora", 1))
    assert RunRecord.from_dict(make_record("lora", 1)).extra == {}  # the synthetic records keep to the schema


def test_round_trip_keeps_order_nulls_and_unknown_keys():
    d = {"run_id": "r", "future_section": {"x": [1, 2]}, "status": "failed", "error": None, "schema_version": 1,
         "extra": "a key named like the field that holds unknown keys", "key_order": 3}
    _round_trip(d)
    rec = RunRecord.from_dict(d)
    assert rec.extra["future_section"] == {"x": [1, 2]} and rec.schema_version == 1 and rec.error is None
    _round_trip({})  # an empty record stays empty (no schema_version invented)


def test_new_sections_follow_the_keys_read():
    rec = RunRecord.from_dict({"schema_version": 1, "run_id": "r", "status": "failed"})
    rec.retryable = True
    rec.error = "E: x"
    assert list(rec.to_dict()) == ["schema_version", "run_id", "status", "error", "retryable"]


def test_fields_are_written_in_run_training_order():
    rec = RunRecord(finished="f", run_id="r", status="done", probes={}, config={}, created="c")
    assert list(rec.to_dict()) == ["run_id", "status", "created", "config", "probes", "finished"]


def test_write_record_stamps_the_schema_version(tmp_path):
    write_record(tmp_path, RunRecord(run_id="r", status="done").to_dict())
    text = json.loads((tmp_path / "record.json").read_text())
    assert list(text) == ["schema_version", "run_id", "status"] and text["schema_version"] == SCHEMA_VERSION
    assert read_run_record(tmp_path).run_id == "r" and read_run_record(tmp_path / "nope") is None


def test_run_training_writes_a_record_that_round_trips_and_flattens(tiny_run_config, tmp_path):
    from arena.experiment import format_run_summary, run_training

    out = tmp_path / "run"
    rec = run_training(tiny_run_config(out=str(out), method="lora", train__steps=2, probe__heldout=4),
                       log=lambda m: None)
    on_disk = json.loads((out / "record.json").read_text())
    _round_trip(on_disk)
    assert list(on_disk) == ["schema_version", "run_id", "status", "created", "config", "model", "method", "objective",
                             "target", "device", "precision", "environment", "data", "probes", "train", "timings",
                             "finished"]
    assert {k: v for k, v in rec.items() if k != "_model"} == on_disk
    row = flatten(RunRecord.from_dict(on_disk), "run")
    assert row["state"] == "done" and row["method"] == "lora" and row["steps"] == 2
    assert row["plasticity_source"] == "probe"  # no evaluation yet: the training probes
    text = format_run_summary(rec)
    assert text.startswith("status: done\ntrain: 2 steps") and "held-out target NLL" in text


def _spec(**kw):
    from arena.sweeps.expand import RunSpec

    return RunSpec(**{"run_id": "lora-s0", "config": {"train": {"seed": 0}}, "method": "lora", "target": "math",
                      "objective": "sft", "label": "lora", "seed": 0, "model": "tiny", "stages": {}, **kw})


def test_write_failure_writes_a_runner_record(tmp_path):
    from runners.worker import write_failure

    write_failure(tmp_path / "r", _spec(), "OSError: disk full", retryable=False, tb="x" * 5000)
    d = json.loads((tmp_path / "r" / "record.json").read_text())
    _round_trip(d)
    assert d["schema_version"] == SCHEMA_VERSION and d["status"] == "failed" and d["written_by"] == "runner"
    assert d["error"] == "OSError: disk full" and d["retryable"] is False and len(d["traceback"]) == 4000
    assert d["sweep"] == {"run_id": "lora-s0", "label": "lora", "seed": 0, "stages": {}, "status": "failed"}
    assert set(d) == {"schema_version", "run_id", "status", "error", "retryable", "written_by", "config", "method",
                      "target", "objective", "sweep", "traceback", "finished"}
    row = flatten(RunRecord.from_dict(d), "sw/r")
    assert row["state"] == "failed" and row["label"] == "lora" and row["error"] == "OSError: disk full"


@pytest.mark.parametrize("status", ["failed", "done"])
def test_write_failure_keeps_a_record_of_the_library(tmp_path, status):
    from runners.worker import write_failure

    before = {"schema_version": 1, "run_id": "y", "status": status, "error": "", "finished": "F"}
    (tmp_path / "record.json").write_text(json.dumps(before))
    write_failure(tmp_path, _spec(), "Late: err", retryable=True)
    after = json.loads((tmp_path / "record.json").read_text())
    if status == "done":
        assert after == before  # a finished result is never overwritten
    else:  # a failed record gains the retryable flag, and the error where it had none; nothing else moves
        assert after == {**before, "error": "Late: err", "retryable": True} and list(after)[-1] == "retryable"
