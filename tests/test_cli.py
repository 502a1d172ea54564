"""The `arena` command: clear one-line errors that write nothing, the train success path, listings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arena.cli import main

TINY = ["--model", "tiny", "--target", "arith"]
# Keeps the success-path run short; the exact README command is what is tested otherwise.
FAST = ["--set", "train.progress=false", "--set", "probe.heldout=8", "--set", "probe.greedy=2",
        "--set", "probe.max_new_tokens=4"]
ARITH_FAST = [*FAST, "--set", "target.n_train=256", "--set", "train.seq_len=64"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, out: str, err: str, *needles: str) -> str:
    assert code == 2, f"exit {code}; stderr: {err}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    line = lines[0]
    assert line.startswith("arena train: error: "), line
    assert "Traceback" not in err and out == ""
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--method", "lorra"], ["method.name", "'lorra'", "did you mean 'lora'?"]),
        (["--method", "oft", "--target", "arithmetic"], ["target.name", "'arithmetic'", "did you mean 'arith'?"]),
        (["--set", "method.rank=0"], ["method.rank", "0", "positive"]),
        (["--method", "oft", "--set", "method.block_size=48"], ["method.block_size", "48", "must divide", "64"]),
        (["--set", "train.lrr=1e-3"], ["train.lrr", "unknown field", "did you mean 'lr'?"]),
        (["--set", "trian.lr=1e-3"], ["trian", "unknown section", "did you mean 'train'?"]),
        (["--set", "method.rank"], ["override", "method.rank", "KEY=VALUE"]),
        (["--set", "train.seq_len=16"], ["no training examples", "train.seq_len (16)"]),  # every prompt is longer
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(capsys, tmp_path, args, needles):
    out_dir = tmp_path / "run"
    argv = ["train", *TINY, "--steps", "2", "--out", str(out_dir)]
    # Later flags win over earlier ones (argparse), so --target in `args` overrides TINY's.
    code, out, err = run_cli(capsys, *argv, *args)
    assert_user_error(code, out, err, *needles)
    assert not out_dir.exists()


def test_missing_data_folder(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--model", "tiny", "--target", "math",
                             "--data-dir", "/nonexistent", "--steps", "2", "--out", str(out_dir))
    assert_user_error(code, out, err, "/nonexistent", "does not exist", "--data-dir")
    assert not out_dir.exists()


@pytest.fixture
def small_gsm8k(tmp_path) -> Path:
    """A data folder laid out like shared/data with 12 GSM8K-style train and 4 test records."""
    root = tmp_path / "data"
    (root / "gsm8k").mkdir(parents=True)
    for name, n, offset in (("train.jsonl", 12, 0), ("test.jsonl", 4, 50)):
        recs = []
        for i in range(offset, offset + n):
            a, b = i + 3, 2 * i + 1
            recs.append(json.dumps({
                "question": f"Tom has {a} apples and buys {b} more. How many apples does he have now?",
                "answer": f"Tom has {a}+{b}=<<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}",
            }))
        (root / "gsm8k" / name).write_text("\n".join(recs) + "\n")
    return root


@pytest.mark.parametrize("name,line", [("train.jsonl", 7), ("test.jsonl", 3)])  # train set; held-out probe set
def test_malformed_jsonl_line(capsys, tmp_path, small_gsm8k, name, line):
    path = small_gsm8k / "gsm8k" / name
    lines = path.read_text().splitlines()
    lines[line - 1] = lines[line - 1][:40]  # cut mid-record
    path.write_text("\n".join(lines) + "\n")
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--model", "tiny", "--target", "math", "--data-dir", str(small_gsm8k),
                             "--steps", "2", "--out", str(out_dir), *FAST)
    assert_user_error(code, out, err, str(path), f"line {line}", "not valid JSON")
    assert not out_dir.exists()


def test_malformed_gsm8k_answer_names_the_line(capsys, tmp_path, small_gsm8k):
    train = small_gsm8k / "gsm8k" / "train.jsonl"
    lines = train.read_text().splitlines()
    rec = json.loads(lines[2])
    rec["answer"] = rec["answer"].replace("####", "=>")
    lines[2] = json.dumps(rec)
    train.write_text("\n".join(lines) + "\n")
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--model", "tiny", "--target", "math", "--data-dir", str(small_gsm8k),
                             "--steps", "2", "--out", str(out_dir), *FAST)
    assert_user_error(code, out, err, "line 3", "####")
    assert not out_dir.exists()


def test_math_target_trains_on_a_small_data_folder(capsys, tmp_path, small_gsm8k):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--model", "tiny", "--target", "math", "--data-dir", str(small_gsm8k),
                             "--steps", "2", "--out", str(out_dir), *FAST, "--set", "train.seq_len=256")
    assert code == 0, err
    record = json.loads((out_dir / "record.json").read_text())
    assert record["status"] == "done" and record["data"]["examples"] == 12


def test_train_success_then_rerun_then_conflict(capsys, tmp_path):
    out_dir = tmp_path / "run"
    argv = ["train", "--model", "tiny", "--method", "oft", "--target", "arith", "--steps", "5", "--out", str(out_dir)]
    code, out, err = run_cli(capsys, *argv, *ARITH_FAST)
    assert code == 0, err
    assert "status: done" in out
    for name in ("config.yaml", "train_log.jsonl", "final/trainable.safetensors", "record.json"):
        assert (out_dir / name).is_file(), name
    log = [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    record_path = out_dir / "record.json"
    record = json.loads(record_path.read_text())
    assert record["status"] == "done"
    assert record["method"]["name"] == "oft" and record["train"]["steps"] == 5
    assert record["config"]["out"] == str(out_dir)
    before = (record_path.stat().st_mtime_ns, record_path.read_bytes())

    # The same command again: nothing to do, nothing rewritten.
    code, out, err = run_cli(capsys, *argv, *ARITH_FAST)
    assert code == 0, err
    assert "already finished" in out
    assert (record_path.stat().st_mtime_ns, record_path.read_bytes()) == before

    # A different config into the same folder is refused and changes nothing.
    code, out, err = run_cli(capsys, *argv[:-2], "--out", str(out_dir), *ARITH_FAST, "--set", "train.seed=1")
    assert_user_error(code, out, err, str(out_dir), "different config", "train")
    assert (record_path.stat().st_mtime_ns, record_path.read_bytes()) == before


def test_out_folder_that_is_not_a_run_is_refused(capsys, tmp_path):
    out_dir = tmp_path / "busy"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("mine")
    code, out, err = run_cli(capsys, "train", *TINY, "--steps", "2", "--out", str(out_dir), *ARITH_FAST)
    assert_user_error(code, out, err, "not an arena run folder")
    assert sorted(p.name for p in out_dir.iterdir()) == ["notes.txt"]


def test_print_config(capsys):
    import yaml

    code, out, err = run_cli(capsys, "train", *TINY, "--method", "vera", "--set", "method.rank=32", "--print-config")
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["method"]["name"] == "vera" and cfg["method"]["rank"] == 32 and cfg["model"]["name"] == "tiny"


def _names(kind: str) -> list[str]:
    from arena.components import registry_for

    return registry_for(kind).names()


@pytest.mark.parametrize("kind", ["methods", "targets", "objectives"])
def test_listings(capsys, kind):
    code, out, err = run_cli(capsys, kind)
    assert code == 0, err
    listed = [ln.split(":")[0] for ln in out.splitlines() if ln and not ln.startswith(" ")]
    assert listed == _names(kind[:-1])
    assert "MISSING" not in out  # list options show their default_factory's value
    code, out, err = run_cli(capsys, kind, "--json")
    assert code == 0, err
    assert [r["name"] for r in json.loads(out)] == _names(kind[:-1])


def test_models_listing(capsys):
    from arena.models.catalog import CATALOG

    code, out, err = run_cli(capsys, "models")
    assert code == 0, err
    listed = [ln.split()[0] for ln in out.splitlines()[1:] if ln and not ln.startswith("cache:")]
    assert listed == [*CATALOG, "tiny"]
    assert os.environ["ARENA_CACHE"] in out  # the test cache, never the user's


def test_console_script_entry_point(tmp_path):
    """The installed `arena` command itself (one subprocess; the rest run in-process)."""
    exe = shutil.which("arena")
    cmd = [exe] if exe else [sys.executable, "-m", "arena.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ok = subprocess.run([*cmd, "methods"], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "lora:" in ok.stdout and "oft:" in ok.stdout
    out_dir = tmp_path / "run"
    bad = subprocess.run([*cmd, "train", *TINY, "--method", "lorra", "--out", str(out_dir)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.strip().count("\n") == 0 and "did you mean 'lora'?" in bad.stderr
    assert not out_dir.exists()
