"""Report sections that read the same in Markdown and HTML: each is a title and a list of blocks,
("text", str) | ("table", DataFrame), rendered by `arena.reports.render` for either format.

The order in a report: the matched-plasticity verdict (the headline), then the raw end points
(recommendations, leaderboard, per-benchmark table), the learning-rate scan, the diagnostics.
"""

from __future__ import annotations

import html

import pandas as pd

from arena.results import exports

from arena.results.correlations import MIN_CI, PAPER as PAPER_CORR
from arena.results.scales import SCALES

Section = tuple[str, list]


def verdict_sections(verdicts: list[dict], n_methods: int) -> list[Section]:
    if not verdicts:
        return [("Verdict at matched plasticity", [("text", "No interpolation paths in these runs, so no method is "
                                                            "compared at matched plasticity; the end points below are "
                                                            "confounded with how far each method moved (enable "
                                                            "`interpolation:` for every method).")])]
    out = []
    for v in verdicts:
        blocks = [("text", s) for s in v["sentences"]]
        if len(v["table"]):
            blocks.insert(1, ("table", v["table"]))
            if len(v["table"]) < n_methods:
                blocks.append(("text", f"{len(v['table'])} of the {n_methods} method(s) have a path in this group; "
                                       "the others are not compared here."))
        out.append((f"Verdict at matched plasticity — {v['title']}", blocks))
    return out


def benchmark_section(view: pd.DataFrame) -> list[Section]:
    if not len(view):
        return []
    blocks = [("text", "Base and tuned accuracy per benchmark, the paired Δ (tuned − base) with its SE "
                       "and the documents scored (n); `beyond_2se` marks a Δ larger than twice its SE."),
              ("table", view)]
    # a benchmark scoring 0 for the base and every tuned run cannot show forgetting; in an axis mean it
    # only shrinks the other benchmarks' differences and SEs by its share
    floor = sorted(b for b, g in view.groupby("benchmark") if (g["base"] == 0).all() and (g["tuned"] == 0).all())
    for b in floor:
        n = int(view.loc[view["benchmark"] == b, "n"].max())
        blocks.append(("text", f"{b} is at the floor: the base and every tuned run score 0 on its {n} documents, so it "
                               "carries no forgetting signal here, and an axis that averages it in is diluted by its share."))
    return [("Per benchmark", blocks)]


def lr_sections(lr: dict) -> list[Section]:
    out = []
    for g in lr.get("groups", []):
        s = SCALES[lr["scale"]]
        blocks = [("text", f"Each method at its own lr and at the lr_scan factors; trade-off = forgetting per unit of "
                           f"target gain ({s['y_label']} / {s['x_label']}), measured only where the gain exceeds 2 SE. "
                           "Best = the lr with the least forgetting per gain (forgetting below 0 counts as 0, ties go "
                           "to the larger gain); each answer says whether the best lr's forgetting differs from the "
                           "own lr's beyond 2 SE."),
                  ("table", g["table"]), ("table", g["best"])]
        blocks += [("text", a) for a in g["answer"]]
        blocks += [("text", "Method ordering by forgetting per gain vs the paper's forgetting (PEFT-Arena SFT, base − "
                            "tuned general accuracy), Spearman ρ with a 95% bootstrap interval over seeds "
                            "(`with_seeds` = methods with >= 2 seeds; no interval when none has):"),
                   ("table", g["orderings"])]
        out.append((f"Learning rate — {g['model']} · {g['target']} · {g['objective']}", blocks))
    return out


def diagnostics_sections(view: pd.DataFrame, corr: pd.DataFrame, against: str) -> list[Section]:
    if not len(view) and not len(corr):
        return []
    blocks = []
    if len(view):
        blocks += [("text", "Per method: capability-conditioned drift (CSD on general prompts, relative and "
                            "unnormalised; G/T ratio) and representation geometry on general prompts (Procrustes, "
                            "Gram, CKA) — mean over seeds, [95% t interval] where there are >= 2 seeds."),
                   ("table", view)]
    if len(corr):
        blocks += [("text", f"Metric vs forgetting (`{against}`) within each model · target · objective, over its "
                            f"finished runs: Pearson and Spearman with 95% bootstrap intervals (none below n = {MIN_CI}); "
                            "the paper's values (PEFT-Arena, Pearson / Spearman over its 7B/3B runs) beside them "
                            f"for {', '.join(PAPER_CORR)}."),
                   ("table", corr)]
    return [("Diagnostics", blocks)]


# ------------------------------------------------------------------ rendering

def report_title(res) -> str:
    """'Method-selection report — <sweep name(s)>', from the records' sweep names."""
    names = sorted({str(n) for n in res.df.get("sweep", pd.Series(dtype=object)).dropna()}) if len(res.df) else []
    return "Method-selection report" + (f" — {', '.join(names)}" if names else "")


def sections_md(sections: list) -> list[str]:
    out = []
    for title, blocks in sections:
        out += [f"## {title}", ""]
        for kind, b in blocks:
            out += [exports.to_markdown(b) if kind == "table" else b, ""]
    return out


def sections_html(sections: list) -> list[str]:
    e = html.escape
    out = []
    for title, blocks in sections:
        out.append(f"<h2>{e(title)}</h2>")
        for kind, b in blocks:
            out.append(table_html(b) if kind == "table" else f"<p>{e(b)}</p>")
    return out


def table_html(df: pd.DataFrame, columns=None) -> str:
    cols = [c for c in (columns or df.columns) if c in df]
    if not len(df) or not cols:
        return "<p><em>(no rows)</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(exports.format_cell(r[c]))}</td>" for c in cols) + "</tr>"
                   for _, r in df.iterrows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
