"""`arena report`: recommendations derived from the data with their numbers and noise caveats, the
paper layout with rank correlations, and the HTML rendered in headless Chromium."""

from __future__ import annotations

import math
import shutil

import pytest

from arena.reports.paper import PUBLISHED, COLUMNS, column_for, rank_correlation
from arena.reports.render import build, render
from dashboard.synthetic import PILOT, write_sweep

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    return write_sweep(tmp_path_factory.mktemp("rep3"), seeds=(0, 1, 2), failed=True)


def test_recommendations_follow_the_data(three_seeds):
    data = build(three_seeds, scale="proxy")
    recs = {r["scenario"].split(" (")[0]: r for r in data.recommendations}
    lb = data.leaderboard.set_index("label")
    quick = recs["quick single-task adaptation"]
    assert quick["pick"] == lb["plasticity_nll"].idxmax()
    assert f"{lb.loc[quick['pick'], 'plasticity_nll']:+.3f} nats" in quick["why"]
    assert "Welch" in quick["why"]  # three seeds: tested against the seed spread
    budget = recs["max target under a forgetting budget"]
    ok = lb[lb["forgetting_nll"] <= 0.05]
    assert budget["pick"] == ok["plasticity_nll"].idxmax() == "vera"  # the only one under 0.05 nats here
    retention = recs["best retention"]
    assert retention["pick"] == lb["forgetting_nll"].idxmin()
    assert "dora" in " ".join(data.notes) and "failed" in " ".join(data.notes)


def test_one_seed_says_seed_variance_was_not_measured(tmp_path):
    root = write_sweep(tmp_path, seeds=(0,))
    md = render(root, "md", scale="proxy")
    assert "seed variance was not measured" in md
    assert "## Recommendations" in md and "## Leaderboard" in md and "## Matched plasticity" in md


def test_within_noise_is_flagged(tmp_path):
    # two methods with identical profiles: whichever is picked, it is within noise of the other
    twin = {"a": ("lora",) + PILOT["lora"][1:], "b": ("lora",) + PILOT["lora"][1:]}
    for lab, prof in twin.items():
        for seed in (0, 1, 2):
            from dashboard.synthetic import make_record, write_run

            write_run(tmp_path, make_record(lab, seed, profile=prof, noise=3.0))
    recs = build(tmp_path, scale="proxy").recommendations
    quick = next(r for r in recs if r["scenario"].startswith("quick"))
    assert quick["within_noise"] and "within noise" in quick["why"]


def test_zero_runs_report(tmp_path):
    assert "No finished runs" in render(tmp_path, "md")
    assert "No finished runs" in render(tmp_path, "html")


def test_paper_table_and_rank_correlation(tmp_path):
    # measured = the published Qwen2.5-7B Math SFT numbers (as accuracies): the orderings agree exactly
    col = COLUMNS.index("Qwen2.5-7B Math")
    base_t, base_g = (v / 100 for v in PUBLISHED[("—", "Base")][col])
    from dashboard.synthetic import make_record, write_run

    for lab, meth in (("full", "Full FT"), ("oft", "OFT b32"), ("lora", "LoRA r8 α16"), ("pissa", "PiSSA r8 α16"),
                      ("vera", "VeRA r256")):
        t, g = (v / 100 for v in PUBLISHED[("SFT", meth)][col])
        rec = make_record(lab, 0, model="Qwen/Qwen2.5-7B-Instruct", noise=0.0)
        cmp = rec["eval"]["compare"]
        cmp["axes"]["target"].update(base=base_t, tuned=t, delta=t - base_t)
        cmp["axes"]["general"].update(base=base_g, tuned=g, delta=g - base_g)
        cmp["target_gain"]["value"], cmp["forgetting"]["value"] = t - base_t, base_g - g
        write_run(tmp_path, rec)
    data = build(tmp_path, scale="accuracy", paper="peft-arena")
    (g,) = data.paper["groups"]
    assert g["matched_column"] and g["columns"] == ["Qwen2.5-7B Math"]
    t = g["table"].set_index("method")
    assert t.loc["Base", "measured_target"] == pytest.approx(35.30)
    assert t.loc["OFT b32", "Qwen2.5-7B Math general"] == 44.37
    c = g["correlations"].set_index("axis")
    assert c.loc["target", "n"] == 5 and c.loc["target", "spearman"] == pytest.approx(1.0)
    assert c.loc["general", "kendall"] == pytest.approx(1.0)
    md = render(tmp_path, "md", scale="accuracy", paper="peft-arena")
    assert "Against the paper" in md and "rank correlation" in md.lower() and "not digits" in md


def test_paper_helpers():
    assert column_for("meta-llama/Llama-3.2-3B-Instruct", "medical") == "Llama3.2-3B Med"
    assert column_for("smollm2-135m-instruct", "math") is None
    r = rank_correlation([1, 2, 3, 4], [10, 30, 20, 40])  # one swapped pair of 6
    assert r["kendall"] == pytest.approx(4 / 6) and r["spearman"] == pytest.approx(0.8)
    assert math.isnan(rank_correlation([1, 2], [2, 1])["spearman"])


def test_cli_writes_report(three_seeds, capsys):
    from arena.cli import main

    assert main(["report", str(three_seeds), "--format", "md"]) == 0
    text = (three_seeds / "report.md").read_text()
    assert text.startswith("# Method-selection report")
    assert main(["report", str(three_seeds / "nope")]) == 2


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")
def test_html_report_renders_in_headless_chromium(three_seeds, tmp_path):
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    html = render(three_seeds, "html", scale="proxy")
    self_contained = html.count("<script") >= 2 and "<script src=" not in html and "Plotly.newPlot" in html
    assert self_contained  # plotly.js inlined: renders offline (a bare bool keeps pytest from diffing 5 MB)
    page_path = tmp_path / "report.html"
    page_path.write_text(html)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri())
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)
        n_plots = page.eval_on_selector_all(".js-plotly-plot", "els => els.length")
        n_points = page.eval_on_selector_all(".js-plotly-plot .scatterlayer .point", "els => els.length")
        text = page.inner_text("body")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert not errors, errors
    assert n_plots == 2  # the Pareto plot and the interpolation paths
    assert n_points >= 5 + 1 + 15 * 5 // 5  # methods + base + path points
    assert "Recommendations" in text and "best retention" in text
    assert (tmp_path / "report.png").stat().st_size > 20_000


def test_incomplete_learning_section(tmp_path):
    import json

    from scipy.stats import binomtest

    root = write_sweep(tmp_path / "ilp", labels=("lora", "vera"), seeds=(0, 1), ilp=True)
    md = render(root, "md", scale="proxy")
    assert "## Incomplete learning" in md and "pass@5 < 0.2" in md
    recs = [json.loads(p.read_text()) for p in sorted(root.glob("vera-*/record.json"))]
    k, n = sum(r["ilp"]["unlearned"]["k"] for r in recs), sum(r["ilp"]["unlearned"]["n"] for r in recs)
    ci = binomtest(k, n).proportion_ci(method="wilson")
    assert f"| vera | smollm2-135m-instruct | math | 2 | {n} | {k} | {100 * k / n:.1f}% [{100 * ci.low:.1f}, " \
           f"{100 * ci.high:.1f}] |" in md
    assert "### Causes — lora-bucketing" in md and "not tested: the run kept no checkpoint" in md
    assert "What is" in md and "overlaps:" in md  # example prompts and overlaps
    eff = md[md.index("### Mitigation effects"):]
    row = next(ln for ln in eff.splitlines() if ln.startswith("| lora | bucketing |"))
    assert "beyond noise" in row and "pp [" in row  # synthetic: about −half the baseline's unlearned share
    html = render(root, "html", scale="proxy")
    assert "<h2>Incomplete learning</h2>" in html and "beyond noise" in html


def test_incomplete_learning_without_mitigations_or_ilp(tmp_path):
    root = write_sweep(tmp_path / "a", labels=("lora",), ilp=True, mitigated=())
    md = render(root, "md", scale="proxy")
    assert "## Incomplete learning" in md and "not enough runs" in md
    plain = write_sweep(tmp_path / "b", labels=("lora",))
    assert "Incomplete learning" not in render(plain, "md", scale="proxy")
    assert "Incomplete learning" not in render(plain, "html", scale="proxy")


def test_incomplete_learning_sections_keep_each_target_to_its_own_overlaps(tmp_path):
    import json as _json

    write_sweep(tmp_path / "a", labels=("lora",), ilp=True, mitigated=(), target="math")
    write_sweep(tmp_path / "b", labels=("lora",), ilp=True, mitigated=(), target="medical")
    for sub, overlaps in (("a", {"I+II": 7}), ("b", {})):
        for rec_path in (tmp_path / sub).glob("*/record.json"):
            rec = _json.loads(rec_path.read_text())
            rec["ilp"]["overlaps"] = overlaps
            rec_path.write_text(_json.dumps(rec))
    md = render(tmp_path, "md", scale="proxy")
    math_part = md.split("### Causes — lora, math")[1].split("### ")[0]
    medical_part = md.split("### Causes — lora, medical")[1].split("### ")[0]
    assert "I+II: 7" in math_part and "overlaps: none" in medical_part and "I+II" not in medical_part
