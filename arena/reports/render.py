"""`arena report`: a method-selection report from the records under a folder, as HTML or Markdown.

HTML is self-contained (plotly.js inlined once, tables and text inline) and renders offline.
Everything in it is derived from the records: the leaderboard, the Pareto plot, recommendations
per scenario with the numbers that justify them, matched-plasticity comparisons along interpolation
paths, incomplete learning (when some run has an ilp section: unlearned fractions, causes,
mitigation effects; `arena.results.ilp`), and optionally the paper's table layout beside its
published numbers.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from arena.errors import ArenaError
from arena.records import utc_now
from arena.reports.paper import CITATION, PAPER, paper_table
from arena.reports.recommend import recommend
from arena.results import exports
from arena.results.ilp import group_name, ilp_summary
from arena.results.leaderboard import leaderboard
from arena.results.load import Results, load_results
from arena.results.matched import interpolation_curves, matched_plasticity
from arena.results.objectives import display_tables, objectives_summary
from arena.results.opd_studies import display_table as opd_table, opd_summary
from arena.results.correlations import metric_vs_forgetting
from arena.results.lr_scan import lr_view
from arena.results.scales import SCALES, pick_scale, scale_notes
from arena.results.views import benchmark_view, diagnostics_view
from arena.reports.sections import (benchmark_section, diagnostics_sections, lr_sections, report_title,
                                    sections_html, sections_md, table_html, verdict_sections)
from arena.reports.verdict import headline

LB_COLUMNS = ["model", "target", "objective", "label", "seeds", "{x}", "{x}_err", "{y}", "{y}_err", "forgetting_per_gain",
              "pareto", "trainable_params", "train_s", "peak_memory_mb", "err_kind"]


@dataclass
class ReportData:
    root: Path
    results: Results
    scale: str
    leaderboard: pd.DataFrame
    recommendations: list
    curves: pd.DataFrame
    matched: dict
    paper: Optional[dict] = None
    ilp: Optional[dict] = None  # arena.results.ilp.ilp_summary: None when no finished run has an ilp section
    objectives: Optional[dict] = None  # arena.results.objectives.objectives_summary: groups comparing objectives
    opd: Optional[dict] = None  # arena.results.opd_studies.opd_summary: every OPD run with overlap and outcome
    notes: list = field(default_factory=list)
    created: str = ""
    title: str = "Method-selection report"
    sections: list = field(default_factory=list)  # verdict first (arena.reports.sections), shared by md and html
    tail_sections: list = field(default_factory=list)  # after the leaderboard: benchmarks, lr scan, diagnostics


def build(root, scale: str = "auto", paper: Optional[str] = None, budget: Optional[float] = None) -> ReportData:
    res = load_results(root)
    done = res.done
    scale = pick_scale(done) if scale == "auto" else scale
    lb = leaderboard(done, scale) if len(done) else pd.DataFrame()
    curves = interpolation_curves(res)
    if len(curves):
        curves = curves[curves["key"].isin(set(done["key"]))]
    matched = matched_plasticity(curves)
    notes = []
    if scale == "proxy":
        notes.append("Axes: continuous proxies — plasticity = drop of held-out target NLL, forgetting = general ΔCE "
                     "(rise of NLL on the base model's own responses to general prompts).")
    else:
        notes.append("Axes: lm-eval accuracies — target gain = tuned − base target axis; forgetting = base − tuned "
                     "general axis (IFEval, BBH, NQ-open).")
    notes += scale_notes(done, scale) if len(done) else []
    if len(lb) and (lb["seeds"] < 2).any():
        notes.append("Some methods have one seed: training-seed variance was not measured; error bars are the "
                     "evaluation's standard errors only, and differences within about two of them are noise.")
    limits = sorted({str(int(v)) if isinstance(v, (int, float)) and float(v).is_integer() else str(v)
                     for v in done.get("eval_limit", pd.Series(dtype=object)).dropna()}) if len(done) else []
    if limits:
        notes.append(f"Evaluation subsets: {', '.join(limits)} documents per benchmark (seeded); small subsets "
                     "make every accuracy coarse.")
    bad = res.df[res.df["state"] != "done"] if len(res.df) else res.df
    if len(bad):
        notes.append(f"{len(bad)} run(s) are not results and are left out: " +
                     ", ".join(f"{r.run_id} ({r.state}{': ' + str(r.error)[:120] if isinstance(r.error, str) else ''})"
                               for r in bad.itertuples()))
    notes += [f"skipped: {w}" for w in res.warnings]
    pdata = None
    if paper:
        if paper != PAPER:
            raise ArenaError(f"paper {paper!r}: unknown; known: {PAPER}")
        pdata = paper_table(lb, scale)
    # methods, not labels: an lr_scan run (lr_factor != 1) is a method at another lr, not interpolated by default
    main = done[done["lr_factor"].fillna(1.0) == 1.0] if "lr_factor" in done else done
    n_methods = int(main["label"].nunique()) if len(main) and "label" in main else 0
    sections = verdict_sections(headline(matched), n_methods) if len(done) else []
    tail = []
    if len(done):
        tail = (benchmark_section(benchmark_view(done)) + lr_sections(lr_view(lb, done, scale))
                + diagnostics_sections(diagnostics_view(done), metric_vs_forgetting(done, SCALES[scale]["y"]),
                                       SCALES[scale]["y"]))
    return ReportData(root=Path(root), results=res, scale=scale, leaderboard=lb,
                      recommendations=recommend(lb, scale, done, budget), curves=curves, matched=matched,
                      paper=pdata, ilp=ilp_summary(res), objectives=objectives_summary(res), opd=opd_summary(res), notes=notes,
                      created=utc_now(), title=report_title(res), sections=sections, tail_sections=tail)


def _lb_columns(data: ReportData) -> list[str]:
    s = SCALES[data.scale]
    return [c.format(x=s["x"], y=s["y"]) for c in LB_COLUMNS]


def _group_title(g: dict) -> str:
    return f"{g['model']} · {g['target']} · {g['objective']}"


# ------------------------------------------------------------------ markdown

def to_markdown(data: ReportData) -> str:
    s = SCALES[data.scale]
    out = [f"# {data.title}", "", f"_{data.root} · generated {data.created} from "
           f"{len(data.results.done)} finished run(s)_", ""]
    out += [f"- {n}" for n in data.notes] + [""]
    if not len(data.leaderboard):
        out.append("No finished runs: nothing to compare yet.")
        return "\n".join(out) + "\n"
    out += sections_md(data.sections)
    out += ["## Recommendations (end points)", ""]
    for r in data.recommendations:
        out.append(f"### {r['scenario']} ({r['model']} · {r['target']} · {r['objective']})")
        out.append(f"**{r['pick'] or 'no pick'}** — {r['why']}")
        out.append("")
    out += ["## Leaderboard", "", f"x = {s['x_label']}; y = {s['y_label']}; ± = `err_kind`.", "",
            exports.to_markdown(data.leaderboard, _lb_columns(data)), ""]
    out += sections_md(data.tail_sections)
    out += _matched_md(data)
    out += _objectives_md(data)
    out += _ilp_md(data)
    if data.paper:
        out += _paper_md(data)
    out.append("Plots: see the HTML report (`arena report DIR --format html`).")
    return "\n".join(out) + "\n"


def _matched_md(data: ReportData) -> list[str]:
    out = []
    for g in data.matched.get("groups", []):
        out += [f"## Matched plasticity — {_group_title(g)} ({g['path']} path)", ""]
        if not len(g.get("methods", [])):
            out += [g.get("note", ""), ""]
            continue
        out += [f"Forgetting read off each interpolation path at a common target gain of {g['level']:.4g} "
                "(the largest gain every path reaches; linear in α between scored points).", "",
                exports.to_markdown(g["methods"]), ""]
        if len(g.get("pairs", [])):
            out += [exports.to_markdown(g["pairs"]), ""]
        out += [f"_{g['note']}_", ""]
    return out


# ------------------------------------------------------------------ incomplete learning

ILP_INTRO = ("A training sample is unlearned when the tuned model still fails it: pass@{n} < {t} on the run's own "
             "training samples (a seeded subset re-tested after training; probe: {probe}). Fractions are k/n over the "
             "tested samples with a 95% Wilson interval; a group's seeds are pooled (k and n summed).")
NO_MITIGATION = ("Mitigation effects: not enough runs — no mitigation run (objective.order/reverse, bucketing, "
                 "resample_every, progressive, model.init_from) with a plain SFT baseline of the same model, target, "
                 "method config and seed.")


def _pct(v) -> str:
    return "–" if v is None or v != v else f"{100 * v:.1f}%"


def _pct_ci(v, lo, hi) -> str:
    return "–" if v is None or v != v else f"{100 * v:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def _pp_ci(v, lo, hi) -> str:
    return "–" if v is None or v != v else f"{100 * v:+.1f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def ilp_tables(ilp: dict) -> dict:
    """The incomplete-learning section as text tables: intro, groups, causes per group, effects."""
    runs, groups, causes, effects = ilp["runs"], ilp["groups"], ilp["causes"], ilp["effects"]
    r0 = runs.iloc[0]
    intro = ILP_INTRO.format(n=int(r0["pass_n"]) if r0["pass_n"] == r0["pass_n"] else "N",
                             t=r0["threshold"], probe=", ".join(sorted({str(p) for p in runs["probe"].dropna()})))
    g = pd.DataFrame({"group": [group_name(r) for _, r in groups.iterrows()], "model": groups["model"],
                      "target": groups["target"], "seeds": groups["seeds"], "n": groups["n"].astype(int),
                      "unlearned": groups["k"].astype(int),
                      "fraction [95% CI]": [_pct_ci(r.fraction, r.ci_low, r.ci_high) for r in groups.itertuples()],
                      "per seed": [_pct(r.fraction_min) if r.seeds < 2 else f"{_pct(r.fraction_min)}–{_pct(r.fraction_max)}"
                                   for r in groups.itertuples()]})
    per_group = []
    ov = ilp["overlaps"]
    for _, gr in groups.iterrows():
        sel = (causes["label"] == gr["label"]) & (causes["mitigation"] == gr["mitigation"]) \
            & (causes["model"] == gr["model"]) & (causes["target"] == gr["target"])
        c = causes[sel]
        rows = []
        for r in c.itertuples():
            tested = r.tested_runs > 0
            rows.append({"cause": r.cause, "name": r.name,
                         "share [95% CI]": _pct_ci(r.share, r.ci_low, r.ci_high) if tested else "not tested",
                         "k / unlearned": f"{int(r.k)} / {int(r.unlearned)}" if tested else "–",
                         "rule": r.rule if tested or not isinstance(r.missing, str) else f"{r.rule} — not tested: {r.missing}",
                         "example prompt": r.example_prompt[:120] if isinstance(r.example_prompt, str) else ""})
        o = ov[(ov["label"] == gr["label"]) & (ov["mitigation"] == gr["mitigation"]) & (ov["model"] == gr["model"])
               & (ov["target"] == gr["target"])] if len(ov) else ov
        overlaps = ", ".join(f"{x.causes}: {int(x.count)}" for x in o.itertuples()) if len(o) else "none"
        note = (f"{int(gr['k'])} unlearned of {int(gr['n'])}; a sample may match several causes (overlaps: {overlaps}); "
                "shares are over the unlearned samples of the runs where the cause was tested.")
        if not gr["k"]:
            note = "No unlearned samples: nothing to attribute."
        per_group.append((f"{group_name(gr)}, {gr['target']}", pd.DataFrame(rows), note))
    eff = None
    if len(effects):
        eff = pd.DataFrame({
            "baseline": effects["label"], "mitigation": effects["mitigation"], "pairs": effects["pairs"],
            "n": effects["n"], "unlearned before": [_pct(v) for v in effects["baseline"]],
            "after": [_pct(v) for v in effects["mitigated"]],
            "effect [95% CI]": [_pp_ci(r.effect, r.ci_low, r.ci_high) for r in effects.itertuples()],
            "verdict": ["not paired" if not r.n else ("beyond noise" if r.beyond_noise else "within noise")
                        for r in effects.itertuples()],
            "Δ forgetting": [f"{r.d_forgetting:+.4f} ± {r.d_forgetting_se:.4f}" if r.d_forgetting == r.d_forgetting
                             else "–" for r in effects.itertuples()],
            "Δ general ΔCE": [f"{r.d_forgetting_nll:+.4f} ± {r.d_forgetting_nll_se:.4f}"
                              if r.d_forgetting_nll == r.d_forgetting_nll else "–" for r in effects.itertuples()],
            "note": [x or "" for x in effects["note"]]})
    return {"intro": intro, "groups": g, "causes": per_group, "effects": eff}


EFFECT_NOTE = ("Effect = unlearned fraction of the mitigation run − that of its baseline on the same tested samples "
               "(paired by sample key; negative: the mitigation learned more), with a seeded bootstrap 95% interval over "
               "samples; beyond noise = the interval excludes 0. Δ forgetting: mitigated − baseline (accuracy "
               "forgetting and general ΔCE), ± SE over seeds, or the evaluations' SE with one seed.")


def _objectives_md(data: ReportData) -> list[str]:
    out = []
    for g in (data.objectives or {}).get("groups", []):
        table, pairs = display_tables(g)
        out += [f"## Objectives compared — {g['model']} · {g['target']} · {g['label']}", "", exports.to_markdown(table), ""]
        if len(pairs):
            out += [exports.to_markdown(pairs), ""]
        out += [f"_{g['note']}_", ""]
    if data.opd:
        out += ["## On-policy distillation: overlap and outcome", "", exports.to_markdown(opd_table(data.opd)), "",
                f"_{data.opd['note']}_", ""]
    return out


def _ilp_md(data: ReportData) -> list[str]:
    if not data.ilp:
        return []
    t = ilp_tables(data.ilp)
    out = ["## Incomplete learning", "", t["intro"], "", exports.to_markdown(t["groups"]), ""]
    for name, table, note in t["causes"]:
        out += [f"### Causes — {name}", "", exports.to_markdown(table), "", f"_{note}_", ""]
    out += ["### Mitigation effects", ""]
    out += [exports.to_markdown(t["effects"]), "", EFFECT_NOTE, ""] if t["effects"] is not None else [NO_MITIGATION, ""]
    return out


def _ilp_html(data: ReportData) -> list[str]:
    if not data.ilp:
        return []
    e = html.escape
    t = ilp_tables(data.ilp)
    parts = ["<h2>Incomplete learning</h2>", f"<p class='note'>{e(t['intro'])}</p>", _table_html(t["groups"])]
    for name, table, note in t["causes"]:
        parts += [f"<h3>Causes — {e(name)}</h3>", _table_html(table), f"<p class='note'>{e(note)}</p>"]
    parts.append("<h3>Mitigation effects</h3>")
    if t["effects"] is not None:
        parts += [_table_html(t["effects"]), f"<p class='note'>{e(EFFECT_NOTE)}</p>"]
    else:
        parts.append(f"<p>{e(NO_MITIGATION)}</p>")
    return parts


def _paper_md(data: ReportData) -> list[str]:
    out = ["## Against the paper (PEFT-Arena)", "", f"Published: {CITATION}. Measured with lm-eval, not OpenCompass/vLLM: "
           "compare orderings (rank correlation), not digits."]
    if data.scale == "proxy":
        out.append("Measured columns are on the proxy scale (plasticity, −ΔCE): only the orderings are comparable.")
    out.append("")
    for g in data.paper["groups"]:
        out += [f"### {g['model']} · {g['target']}" + ("" if g["matched_column"] else
                                                     " (no published column for this model: compared with every "
                                                     "column of the same target)"), "",
                exports.to_markdown(g["table"]), "", "Rank correlation of method orderings:", "",
                exports.to_markdown(g["correlations"]), ""]
    return out


# ------------------------------------------------------------------ html

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.note{color:#555}.pick{font-weight:bold}
.rec{border-left:4px solid #1f77b4;padding:0.3em 0.8em;margin:0.8em 0;background:#f8fbff}.noise{color:#a15c00}"""


_table_html = table_html


def to_html(data: ReportData) -> str:
    from arena.results import figures  # plotly: only the HTML report draws figures

    parts: list[str] = []
    figs = 0

    def fig_html(fig) -> str:
        nonlocal figs
        figs += 1
        # plotly.js inlined once (the first figure), so the page renders offline and stays one file
        return fig.to_html(full_html=False, include_plotlyjs=True if figs == 1 else False,
                           div_id=f"fig{figs}", config={"displaylogo": False})

    e = html.escape
    parts.append(f"<h1>{e(data.title)}</h1><p class='note'>{e(str(data.root))} · generated {e(data.created)} "
                 f"· {len(data.results.done)} finished run(s)</p>")
    parts.append("<ul>" + "".join(f"<li class='note'>{e(n)}</li>" for n in data.notes) + "</ul>")
    if not len(data.leaderboard):
        parts.append("<p>No finished runs: nothing to compare yet.</p>")
    else:
        parts += sections_html(data.sections)
        parts.append("<h2>Pareto plot (end points)</h2>")
        for (model, target, objective), g in data.leaderboard.groupby(["model", "target", "objective"], dropna=False):
            parts.append(fig_html(figures.pareto_figure(g.reset_index(drop=True), data.scale,
                                                      f"{model} · {target} · {objective}: target vs general")))
        parts.append("<h2>Recommendations (end points)</h2>")
        for r in data.recommendations:
            noise = " <span class='noise'>(within noise of the runner-up)</span>" if r.get("within_noise") else ""
            parts.append(f"<div class='rec'><h3>{e(r['scenario'])} <small>({e(str(r['model']))} · {e(str(r['target']))} · "
                         f"{e(str(r['objective']))})</small></h3><p><span class='pick'>{e(str(r['pick'] or 'no pick'))}</span>"
                         f"{noise} — {e(r['why'])}</p></div>")
        s = SCALES[data.scale]
        parts.append(f"<h2>Leaderboard</h2><p class='note'>x = {e(s['x_label'])}; y = {e(s['y_label'])}</p>")
        parts.append(_table_html(data.leaderboard, _lb_columns(data)))
        parts += sections_html(data.tail_sections)
        if len(data.curves):
            parts.append("<h2>Interpolation and matched plasticity</h2>")
            for g in data.matched.get("groups", []):
                c = data.curves[(data.curves["path"].isin(str(g["path"]).split(","))) & (data.curves["target"] == g["target"])
                                & (data.curves["model"] == g["model"]) & (data.curves["objective"] == g["objective"])
                                & (data.curves["kind"] == g["kind"])]
                parts.append(fig_html(figures.interpolation_figure(c, g.get("level"))))
                if len(g.get("methods", [])):
                    parts.append(f"<p>Forgetting at a common target gain of {g['level']:.4g} ({e(_group_title(g))}, "
                                 f"{e(g['path'])} path, {e(str(g['kind']))} scorer):</p>" + _table_html(g["methods"]))
                    if len(g.get("pairs", [])):
                        parts.append(_table_html(g["pairs"]))
                parts.append(f"<p class='note'>{e(g.get('note', ''))}</p>")
        for g in (data.objectives or {}).get("groups", []):
            table, pairs = display_tables(g)
            parts.append(f"<h2>Objectives compared — {e(str(g['model']))} · {e(str(g['target']))} · {e(str(g['label']))}</h2>")
            parts.append(_table_html(table) + (_table_html(pairs) if len(pairs) else ""))
            if len(g["curves"]):
                parts.append(fig_html(figures.reward_figure(g["curves"])))
            parts.append(f"<p class='note'>{e(g['note'])}</p>")
        if data.opd:
            parts.append("<h2>On-policy distillation: overlap and outcome</h2>" + _table_html(opd_table(data.opd))
                         + f"<p class='note'>{e(data.opd['note'])}</p>")
        parts += _ilp_html(data)
        if data.paper:
            parts.append(f"<h2>Against the paper (PEFT-Arena)</h2><p class='note'>Published: {e(CITATION)}. Measured "
                         "with lm-eval, not OpenCompass/vLLM: compare orderings (rank correlation), not digits.</p>")
            for g in data.paper["groups"]:
                parts.append(f"<h3>{e(str(g['model']))} · {e(str(g['target']))}</h3>" + _table_html(g["table"]))
                parts.append("<p>Rank correlation of method orderings:</p>" + _table_html(g["correlations"]))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(data.title)}</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(parts) + "</body></html>\n")


def render(root, fmt: str = "html", **kw) -> str:
    data = build(root, **kw)
    if fmt == "html":
        return to_html(data)
    if fmt in ("md", "markdown"):
        return to_markdown(data)
    raise ValueError(f"unknown report format {fmt!r}; allowed: html, md")
