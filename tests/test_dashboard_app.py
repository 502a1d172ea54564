"""The Streamlit dashboard: AppTest on synthetic records (zero runs, failed and corrupt records,
filters, the Pareto plot's content), and the real server rendered in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from dashboard.synthetic import write_sweep

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture
def run_app(monkeypatch):
    """AppTest of the dashboard on a results folder (ARENA_RESULTS stays set for reruns)."""
    from streamlit.testing.v1 import AppTest

    def run(results: Path):
        monkeypatch.setenv("ARENA_RESULTS", str(results))
        return AppTest.from_file(APP, default_timeout=120).run()

    return run


def decode(v):
    """plotly 7 stores arrays in the spec as {"dtype", "bdata"} (base64)."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return v


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return write_sweep(tmp_path_factory.mktemp("dash"), seeds=(0, 1), failed=True, corrupt=True)


def test_app_renders_every_section(results, run_app):
    at = run_app(results)
    assert not at.exception, at.exception
    assert [t.label for t in at.tabs] == ["Leaderboard", "Pareto", "Interpolation", "Diagnostics", "Run detail", "Status"]
    lb = at.dataframe[0].value
    assert len(lb) == 5 and {"target_gain", "forgetting", "trainable_params", "train_s", "peak_memory_mb"} <= set(lb.columns)
    warnings = " ".join(w.value for w in at.warning)
    assert "unreadable record" in warnings and "not finished results" in warnings
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    pareto = next(c for c in charts if "target vs general" in c["layout"]["title"]["text"])
    names = [t.get("name") for t in pareto["data"]]
    assert "base model" in names and "Pareto front" in names and {"full", "lora", "vera"} <= set(names)
    base = next(t for t in pareto["data"] if t.get("name") == "base model")
    assert decode(base["x"])[0] == pytest.approx(0.105, abs=0.01)  # the base target accuracy (synthetic: 0.10-0.11)
    vera = next(t for t in pareto["data"] if t.get("name") == "vera")
    assert decode(vera["error_y"]["array"])[0] > 0  # error bars present
    assert any("interpolation" in c["layout"]["title"]["text"] for c in charts)
    assert any("Pearson" in c["layout"]["title"]["text"] for c in charts)  # metric vs forgetting


def test_filters_and_scale(results, run_app):
    at = run_app(results)
    at.sidebar.multiselect(key="f_label").select("lora").select("vera").run()
    assert not at.exception
    assert sorted(at.dataframe[0].value["label"]) == ["lora", "vera"]
    at.sidebar.radio(key="scale").set_value("proxy").run()
    assert not at.exception and "plasticity_nll" in at.dataframe[0].value.columns


def test_failed_run_detail_shows_error(results, run_app):
    at = run_app(results)
    sb = at.selectbox(key="detail_run")
    sb.set_value(next(o for o in sb.options if "dora" in o)).run()
    assert not at.exception
    assert any("NaN" in e.value for e in at.error)


def test_zero_runs(tmp_path, run_app):
    at = run_app(tmp_path)
    assert not at.exception
    assert any("No runs" in i.value for i in at.info)


def test_only_failed_runs(tmp_path, run_app):
    write_sweep(tmp_path, labels=(), failed=True)
    at = run_app(tmp_path)
    assert not at.exception
    assert any("No finished runs" in i.value for i in at.info)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")
def test_dashboard_in_headless_chromium(results, tmp_path):
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    from arena.commands.dashboard import streamlit_command

    port = _free_port()
    cmd = streamlit_command(str(results), port)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "streamlit.log").read_text()
            assert time.monotonic() < deadline, "streamlit did not come up"
            time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
            page.wait_for_selector('[data-testid="stDataFrame"]', state="visible", timeout=90_000)
            page.wait_for_selector(".js-plotly-plot", state="attached", timeout=60_000)
            assert page.query_selector('[data-testid="stException"]') is None
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        assert shot.stat().st_size > 20_000
        if os.environ.get("ARENA_TEST_ARTIFACTS"):
            shutil.copy(shot, Path(os.environ["ARENA_TEST_ARTIFACTS"]) / "dashboard.png")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=20)
        log.close()


def test_dashboard_command(tmp_path, capsys):
    from arena.cli import main

    assert main(["dashboard", "--results", str(tmp_path), "--print-command", "--port", "8555"]) == 0
    out = capsys.readouterr().out
    assert "--server.address 127.0.0.1" in out and "--server.port 8555" in out and str(tmp_path) in out
    assert main(["dashboard", "--results", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
