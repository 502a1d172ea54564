"""The arena results dashboard (Streamlit). Read-only: it reads record.json files and writes nothing.

    arena dashboard --results results/          # binds 127.0.0.1
    streamlit run dashboard/app.py -- --results results/quickstart

The results folder comes from `--results` after `--`, else ARENA_RESULTS, else ./results.
Imports only the results library (arena.results): no torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from arena.results import exports, figures
from arena.results.filters import filter_runs, options
from arena.results.flatten import DIAG_PREFIX
from arena.results.ilp import (CAUSE_ORDER, cause_table, examples_table, group_name, ilp_runs, mitigation_effects,
                               overlap_table, run_groups)
from arena.results.leaderboard import leaderboard
from arena.results.load import Results, load_results, train_log
from arena.results.matched import interpolation_curves, matched_plasticity
from arena.results.correlations import metric_vs_forgetting
from arena.results.lr_scan import lr_view
from arena.results.scales import SCALES, has_scale, pick_scale, scale_notes
from arena.results.tables import benchmark_table, module_table
from arena.results.views import benchmark_view, diagnostics_view
from arena.reports.verdict import verdict

STATE_ORDER = ["done", "incomplete", "interrupted", "failed", "running"]


def error_bar_caption(kinds: set) -> str:
    """What the ± of the leaderboard is, from its `err_kind` values (results.stats.seed_mean_se)."""
    several = any(k.startswith("seed SEM") for k in kinds)
    single = any("1 seed" in k for k in kinds)
    out = []
    if several:
        out.append("± with ≥ 2 seeds = the seeds' standard error together with the evaluation's (the seeds share "
                   "the documents, whose noise a seed mean keeps)")
    if single:
        out.append(("rows with one seed: ± = the evaluation's standard error only, training-seed variance not "
                    "measured" if several else "± = the evaluation's standard error. One seed per method: "
                    "training-seed variance was not measured"))
    return ("; ".join(out) or "±: no error bars") + "; differences smaller than about two SE are noise."


def results_dir() -> Path:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--results")
    args, _ = p.parse_known_args(sys.argv[1:])
    return Path(args.results or os.environ.get("ARENA_RESULTS") or "results")


def sidebar_filters(df: pd.DataFrame) -> tuple[dict, str]:
    st.sidebar.header("Filters")
    sel = {}
    for col, name in (("model", "model"), ("target", "target"), ("objective", "objective"), ("label", "method")):
        opts = options(df, col)
        sel[col] = st.sidebar.multiselect(name, opts, default=[], key=f"f_{col}", placeholder="all")
    scales = [s for s in SCALES if has_scale(df, s)] or list(SCALES)
    default = pick_scale(df[df["state"] == "done"] if "state" in df else df)
    scale = st.sidebar.radio("axes", scales, index=scales.index(default) if default in scales else 0, key="scale",
                             help="accuracy: lm-eval benchmark accuracies; proxy: continuous NLL proxies "
                                  "(general ΔCE, held-out target NLL). The default is chosen by signal-to-noise: "
                                  "accuracy only when both of its axes clear 2 SE (arena/results/scales.py)")
    st.sidebar.caption(f"default axes: {default} (signal-to-noise rule)")
    return sel, scale


def leaderboard_tab(lb: pd.DataFrame, scale: str, runs: pd.DataFrame | None = None) -> None:
    s = SCALES[scale]
    if not len(lb):
        st.info("No finished runs match the filters yet.")
        return
    cols = ["model", "target", "objective", "label", "seeds", s["x"], s["x"] + "_err", s["y"], s["y"] + "_err",
            "forgetting_per_gain", "pareto", "trainable_params", "trainable_fraction", "train_s", "wall_s",
            "peak_memory_mb", "err_kind"]
    other = "proxy" if scale == "accuracy" else "accuracy"
    cols += [c for c in (SCALES[other]["x"], SCALES[other]["y"]) if c in lb]
    cols += [c for c in lb.columns if c.startswith("bench_delta:")]
    view = lb[[c for c in cols if c in lb]]
    st.dataframe(view, hide_index=True, width="stretch",
                 column_config={s["x"]: st.column_config.NumberColumn(s["x_label"], format="%.4f"),
                                s["y"]: st.column_config.NumberColumn(s["y_label"], format="%.4f"),
                                "pareto": st.column_config.CheckboxColumn("Pareto"),
                                "trainable_params": st.column_config.NumberColumn("trainable params", format="%d")})
    kinds = set(lb.get("err_kind", pd.Series(dtype=str)).dropna())
    st.caption(error_bar_caption(kinds))
    if "lr_factor" in lb and (lb["lr_factor"].fillna(1) != 1).any():
        for i, g in enumerate(lr_view(lb, runs if runs is not None else pd.DataFrame(), scale)["groups"]):
            st.markdown(f"**Best trade-off over lr** ({g['model']} · {g['target']} · {g['objective']}): forgetting "
                        "per unit of target gain, measured where the gain exceeds 2 SE")
            st.dataframe(g["best"], hide_index=True, key=f"lr_best_{i}")
            with st.expander("every lr"):
                st.dataframe(g["table"], hide_index=True, key=f"lr_table_{i}")
                st.dataframe(g["orderings"], hide_index=True, key=f"lr_orderings_{i}")
            for a in g["answer"]:
                st.caption(a)
    if runs is not None and len(runs):
        with st.expander("per benchmark: base, tuned, paired Δ, SE, n"):
            st.dataframe(benchmark_view(runs), hide_index=True, key="bench_view")
    c1, c2, c3, c4 = st.columns(4)
    for col, fmt, mime in ((c1, "csv", "text/csv"), (c2, "json", "application/json"), (c3, "md", "text/markdown"),
                           (c4, "tex", "text/x-tex")):
        col.download_button(f"download {fmt}", exports.export(lb, fmt), file_name=f"leaderboard.{fmt}", mime=mime,
                            key=f"dl_{fmt}")


def pareto_tab(lb: pd.DataFrame, scale: str) -> None:
    if not len(lb):
        st.info("No finished runs to plot.")
        return
    groups = lb.groupby(["model", "target", "objective"], dropna=False)
    for (model, target, objective), g in groups:
        st.plotly_chart(figures.pareto_figure(g.reset_index(drop=True), scale,
                                            f"{model} · {target} · {objective}: target vs general"),
                        key=f"pareto_{model}_{target}_{objective}")
    st.caption("Stars: on the Pareto front (no other method is better on both axes). Error bars as in the leaderboard.")


def interpolation_tab(res: Results, keys: set) -> None:
    curves = interpolation_curves(res)
    curves = curves[curves["key"].isin(keys)] if len(curves) else curves
    if not len(curves):
        st.info("No interpolation curves among the selected runs (sweep config: interpolation.enabled).")
        return
    matched = matched_plasticity(curves)
    for i, g in enumerate(matched["groups"]):
        c = curves[(curves["target"] == g["target"]) & (curves["path"].isin(str(g["path"]).split(","))) & (curves["model"] == g["model"])
                   & (curves["objective"] == g["objective"]) & (curves["kind"] == g["kind"])]
        st.plotly_chart(figures.interpolation_figure(c, g.get("level")), key=f"interp_{i}")
        st.markdown(f"**Matched plasticity** ({g['model']} · {g['target']} · {g['objective']}, {g['path']} path, {g['kind']} scorer): "
                    f"forgetting read off each path at target gain **{g['level']:.4g}**.")
        v = verdict(g)
        if len(v["table"]):
            st.dataframe(v["table"], hide_index=True, key=f"matched_{i}")
        for sentence in v["sentences"][2:]:
            st.markdown(sentence)
        if len(g.get("pairs", [])):
            st.dataframe(g["pairs"], hide_index=True, key=f"pairs_{i}")
        st.caption(g["note"])


def diagnostics_tab(done: pd.DataFrame, res: Results, scale: str) -> None:
    diag_cols = [c for c in done.columns if c.startswith(DIAG_PREFIX)]
    if not diag_cols:
        st.info("No diagnostics among the selected runs (sweep config: diagnostics.enabled).")
        return
    against = SCALES[scale]["y"]
    st.markdown("**Per method** (mean over seeds, 95% t interval with >= 2 seeds)")
    st.dataframe(diagnostics_view(done), hide_index=True, key="diag_view")
    corr = metric_vs_forgetting(done, against, diag_cols)
    st.markdown(f"**Metric vs forgetting** ({against}) within each model · target · objective: n runs, Pearson and "
                "Spearman with 95% bootstrap intervals, the PEFT-Arena paper's values beside them")
    st.dataframe(corr, hide_index=True, key="corr")
    if len(done) < 3:
        st.caption("Correlations need at least 3 runs.")
    metric = st.selectbox("metric", diag_cols, format_func=lambda c: c.removeprefix(DIAG_PREFIX), key="diag_metric")
    r = corr[corr["metric"] == metric.removeprefix(DIAG_PREFIX)]
    st.plotly_chart(figures.metric_scatter(done, metric, against, r.iloc[0].to_dict() if len(r) else None), key="diag_scatter")
    run = st.selectbox("per-module metrics of run", list(done["key"]), key="diag_run")
    if run:
        st.dataframe(module_table(res.records[run]), hide_index=True, key="modules")


def _ci_bars(v: pd.Series, lo: pd.Series, hi: pd.Series) -> dict:
    """Asymmetric plotly error bars from an interval (Wilson / bootstrap intervals are not ± SE)."""
    return dict(type="data", symmetric=False, array=(hi - v).clip(lower=0).tolist(),
                arrayminus=(v - lo).clip(lower=0).tolist())


def ilp_fraction_figure(groups: pd.DataFrame):
    import plotly.graph_objects as go

    names = [group_name(r) for _, r in groups.iterrows()]
    fig = go.Figure(go.Bar(x=names, y=groups["fraction"], error_y=_ci_bars(groups["fraction"], groups["ci_low"],
                                                                             groups["ci_high"]),
                           customdata=groups[["k", "n", "seeds"]].values,
                           hovertemplate="%{x}: %{y:.1%} (%{customdata[0]:.0f} of %{customdata[1]:.0f}, "
                                         "%{customdata[2]} seed(s))<extra></extra>", name="unlearned"))
    fig.update_layout(title="Unlearned fraction of the training samples (95% Wilson CI, seeds pooled)",
                      yaxis_title="unlearned fraction", yaxis_tickformat=".0%", height=380, margin=dict(t=60))
    return fig


def ilp_cause_figure(causes: pd.DataFrame):
    import plotly.graph_objects as go

    fig = go.Figure()
    for key, c in causes.groupby(["label", "mitigation"], sort=False):
        c = c.set_index("cause").reindex(list(CAUSE_ORDER)).reset_index()
        fig.add_trace(go.Bar(x=c["cause"], y=c["share"], name=group_name(c.iloc[0]),
                             error_y=_ci_bars(c["share"].fillna(0), c["ci_low"].fillna(0), c["ci_high"].fillna(0)),
                             hovertext=c["name"]))
    fig.update_layout(title="Cause shares among the unlearned samples (95% Wilson CI; a sample may have several)",
                      barmode="group", yaxis_title="share of unlearned", yaxis_tickformat=".0%", height=400,
                      margin=dict(t=60))
    return fig


def ilp_effect_figure(effects: pd.DataFrame):
    import plotly.graph_objects as go

    e = effects[effects["n"] > 0]
    names = [f"{r['label']} · {r['mitigation']}" for _, r in e.iterrows()]
    fig = go.Figure(go.Scatter(x=100 * e["effect"], y=names, mode="markers", marker=dict(size=11),
                               error_x=_ci_bars(100 * e["effect"], 100 * e["ci_low"], 100 * e["ci_high"]),
                               customdata=e[["n", "pairs"]].values, name="effect",
                               hovertemplate="%{y}: %{x:+.1f} pp (n = %{customdata[0]}, %{customdata[1]} pair(s))"
                                             "<extra></extra>"))
    fig.add_vline(x=0, line_dash="dot", line_color="#888")
    fig.update_layout(title="Mitigation effect on the unlearned fraction (paired, bootstrap 95% CI)",
                      xaxis_title="mitigated − baseline unlearned (percentage points; < 0: learned more)",
                      height=120 + 40 * max(1, len(e)), margin=dict(t=60))
    return fig


def ilp_tab(res: Results, keys: set) -> None:
    runs = ilp_runs(res)
    runs = runs[runs["key"].isin(keys)] if len(runs) else runs
    if not len(runs):
        st.info("No incomplete-learning results among the selected runs (sweep config: ilp.enabled, SFT runs; "
                "or `arena ilp --run RUN`).")
        return
    groups = run_groups(runs)
    st.plotly_chart(ilp_fraction_figure(groups), key="ilp_fraction")
    st.caption("Unlearned: pass@N below the threshold on the run's own training samples (a seeded subset re-tested "
               "after training). Seeds of a group pooled: k and n summed.")
    causes = cause_table(res, runs)
    st.plotly_chart(ilp_cause_figure(causes), key="ilp_causes")
    untested = causes[(causes["tested_runs"] == 0) & causes["missing"].notna()]
    for r in untested.drop_duplicates("cause").itertuples():
        st.caption(f"Cause {r.cause} ({r.name}) not tested: {r.missing}")
    with st.expander("cause rules and counts"):
        st.dataframe(causes[["label", "mitigation", "cause", "name", "k", "unlearned", "share", "ci_low", "ci_high",
                             "tested_runs", "rule", "missing"]], hide_index=True, key="ilp_cause_table")
        ov = overlap_table(res, runs)
        if len(ov):
            st.dataframe(ov, hide_index=True, key="ilp_overlaps")
    effects = mitigation_effects(res, runs)
    st.markdown("**Mitigation effects** (each mitigation run against the plain SFT run of the same model, target, "
                "method config and seed, on the same tested samples)")
    if len(effects) and (effects["n"] > 0).any():
        st.plotly_chart(ilp_effect_figure(effects), key="ilp_effects")
        st.dataframe(effects[["label", "mitigation", "pairs", "n", "baseline", "mitigated", "effect", "ci_low",
                              "ci_high", "beyond_noise", "d_forgetting", "d_forgetting_se", "d_forgetting_nll",
                              "d_forgetting_nll_se", "note"]], hide_index=True, key="ilp_effect_table")
        st.caption("Beyond noise: the bootstrap interval excludes 0. Δ forgetting: mitigated − baseline, where both "
                   "runs were evaluated.")
    else:
        st.info("Not enough runs: no mitigation run with a matching baseline"
                + (f" ({effects['note'].dropna().iloc[0]})" if len(effects) and effects["note"].notna().any() else "")
                + ".")
    ex = examples_table(res, runs)
    if len(ex):
        cause = st.selectbox("example unlearned samples of cause", [c for c in CAUSE_ORDER if c in set(ex["cause"])],
                             key="ilp_example_cause")
        st.dataframe(ex[ex["cause"] == cause][["group", "run_id", "index", "prompt", "reference", "prediction",
                                                "causes"]], hide_index=True, key="ilp_examples")


def detail_tab(df: pd.DataFrame, res: Results) -> None:
    keys = list(df["key"])
    if not keys:
        st.info("No runs.")
        return
    key = st.selectbox("run", keys, key="detail_run")
    rec = res.records[key]
    row = df[df["key"] == key].iloc[0]
    st.markdown(f"**{row['run_id']}** — state **{row['state']}**, method {row['label']}, target {row['target']}, "
                f"seed {row['seed']}")
    if row["state"] != "done" and isinstance(row.get("error"), str):
        st.error(f"{row['state']}: {row['error']}")
        if rec.traceback:
            st.code(rec.traceback[-3000:], language="text")
    c1, c2 = st.columns(2)
    with c1:
        st.plotly_chart(figures.loss_figure(train_log(res.root / key)), key="loss")
    with c2:
        bt = benchmark_table(rec)
        if len(bt):
            st.dataframe(bt, hide_index=True, key="bench")
        else:
            st.caption("No evaluation in this record.")
    with st.expander("resolved config"):
        st.json(rec.config or {})
    with st.expander("record (without per-document units)"):
        st.json(json.loads(json.dumps(_strip(rec.to_dict()), default=str)))


def _strip(rec: dict) -> dict:
    out = {k: v for k, v in rec.items() if k not in ("eval", "diagnostics")}
    if "eval" in rec:
        out["eval"] = {"compare": (rec["eval"] or {}).get("compare")}
    if "diagnostics" in rec:
        out["diagnostics"] = {"summary": (rec["diagnostics"] or {}).get("summary")}
    return out


def status_tab(df: pd.DataFrame, res: Results) -> None:
    counts = df["state"].value_counts() if len(df) else pd.Series(dtype=int)
    st.write(", ".join(f"{counts.get(s, 0)} {s}" for s in STATE_ORDER if counts.get(s, 0)) or "no runs")
    cols = [c for c in ("run_id", "sweep", "state", "label", "target", "objective", "seed", "error") if c in df]
    st.dataframe(df[cols], hide_index=True, key="status")
    for w in res.warnings:
        st.warning(w)


def main() -> None:
    st.set_page_config(page_title="arena results", layout="wide")
    root = results_dir()
    res = load_results(root)
    names = sorted({str(n) for n in res.df["sweep"].dropna()}) if len(res.df) and "sweep" in res.df else []
    st.title("arena — " + (", ".join(names) if names else "results"))
    st.caption(f"{root.resolve()} · {len(res.df)} run folder(s) · read-only")
    for w in res.warnings:
        st.warning(w)
    if not len(res.df):
        st.info(f"No runs under {root} yet. Start a sweep: `arena sweep configs/quickstart.yaml`.")
        return
    sel, scale = sidebar_filters(res.df)
    df = filter_runs(res.df, **sel)
    done = df[df["state"] == "done"]
    lb = leaderboard(done, scale) if len(done) else pd.DataFrame()
    for note in scale_notes(done, scale) if len(done) else []:
        (st.warning if "its verdicts are noise" in note else st.caption)(note)
    n_bad = int((df["state"] != "done").sum())
    if n_bad:
        st.warning(f"{n_bad} run(s) are not finished results (failed, interrupted or incomplete): see Status.")
    tabs = st.tabs(["Leaderboard", "Pareto", "Interpolation", "Diagnostics", "Incomplete learning", "Run detail",
                    "Status"])
    with tabs[0]:
        leaderboard_tab(lb, scale, done)
    with tabs[1]:
        pareto_tab(lb, scale)
    with tabs[2]:
        interpolation_tab(res, set(done["key"]))
    with tabs[3]:
        diagnostics_tab(done, res, scale)
    with tabs[4]:
        ilp_tab(res, set(done["key"]))
    with tabs[5]:
        detail_tab(df, res)
    with tabs[6]:
        status_tab(df, res)


main()
