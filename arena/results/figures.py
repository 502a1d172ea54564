"""Plotly figures shared by the dashboard and `arena report` (plotly + pandas only, no torch).

Orientation everywhere: right = more target gain, up = more general ability kept, so the upper
right is the good corner (the question a method comparison answers: which method sits at the upper
right of the target-vs-general plane). On the accuracy scale the axes are the absolute target/general accuracies with the base
model as a point; on the proxy scale they are plasticity and −ΔCE with the base at the origin.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from arena.results.pareto import pareto_mask
from arena.results.scales import SCALES

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]


def colors(labels) -> dict:
    return {lab: PALETTE[i % len(PALETTE)] for i, lab in enumerate(sorted({str(x) for x in labels}))}


def _nan0(v) -> float:
    try:
        return 0.0 if v is None or math.isnan(float(v)) else float(v)
    except (TypeError, ValueError):
        return 0.0


def pareto_coords(lb: pd.DataFrame, scale: str) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series, tuple, dict]:
    """(x, y, x_err, y_err, base_point, axis labels) of a leaderboard on a scale."""
    s = SCALES[scale]
    xe = lb.get(s["x"] + "_err", pd.Series(math.nan, index=lb.index))
    ye = lb.get(s["y"] + "_err", pd.Series(math.nan, index=lb.index))
    if scale == "accuracy" and {"target_acc", "general_acc"} <= set(lb.columns) and lb["target_acc"].notna().any():
        base = (float(lb["target_acc_base"].mean()), float(lb["general_acc_base"].mean()))
        return lb["target_acc"], lb["general_acc"], xe, ye, base, {"x": "target accuracy", "y": "general accuracy"}
    return lb[s["x"]], -lb[s["y"]], xe, ye, (0.0, 0.0), {"x": s["x_label"], "y": "general kept: −" + s["y_label"]}


def pareto_figure(lb: pd.DataFrame, scale: str, title: str = "") -> go.Figure:
    """Methods in the target-vs-general plane with error bars, the Pareto front and the base point."""
    fig = go.Figure()
    if not len(lb) or SCALES[scale]["x"] not in lb:
        fig.update_layout(title=title or "no scored runs")
        return fig
    x, y, xe, ye, base, labels = pareto_coords(lb, scale)
    cmap = colors(lb["label"])
    for i in lb.index:
        lab = str(lb.at[i, "label"])
        hover = f"{lab}<br>{labels['x']}: {x[i]:.4g} ± {_nan0(xe[i]):.2g}<br>{labels['y']}: {y[i]:.4g} ± {_nan0(ye[i]):.2g}"
        if "seeds" in lb:
            hover += f"<br>seeds: {lb.at[i, 'seeds']} ({lb.at[i, 'err_kind'] if 'err_kind' in lb else ''})"
        fig.add_trace(go.Scatter(
            x=[x[i]], y=[y[i]], mode="markers+text", name=lab, text=[lab], textposition="top center",
            marker={"size": 12, "color": cmap[lab], "symbol": "star" if bool(lb.get("pareto", pd.Series(False, index=lb.index))[i]) else "circle"},
            error_x={"type": "data", "array": [_nan0(xe[i])], "visible": True},
            error_y={"type": "data", "array": [_nan0(ye[i])], "visible": True},
            hovertext=hover, hoverinfo="text"))
    front = pareto_mask(x, y)
    if front.any():
        pts = sorted(zip(x[front], y[front]))
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", name="Pareto front",
                                 line={"dash": "dash", "color": "#444"}, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[base[0]], y=[base[1]], mode="markers+text", name="base model", text=["base"],
                             textposition="bottom center", marker={"size": 14, "symbol": "x", "color": "black"}))
    fig.update_layout(title=title or "target vs general (upper right is better)", xaxis_title=labels["x"],
                      yaxis_title=labels["y"], legend_title="method", height=520, margin={"t": 60})
    return fig


def interpolation_figure(curves: pd.DataFrame, level: float | None = None, title: str = "") -> go.Figure:
    """Each run's θ(α) path: gain right, general kept up; α on the markers; the matched level dotted."""
    fig = go.Figure()
    if not len(curves):
        fig.update_layout(title=title or "no interpolation curves")
        return fig
    cmap = colors(curves["label"])
    for (key, path), c in curves.groupby(["key", "path"]):
        c = c.sort_values("alpha")
        lab = str(c["label"].iloc[0])
        seed = c["seed"].iloc[0]
        fig.add_trace(go.Scatter(
            x=c["gain"], y=-c["forgetting"], mode="lines+markers", name=f"{lab} s{seed} ({path})",
            hovertext=[f"{lab} s{seed}: α={a:g}" for a in c["alpha"]], hoverinfo="text+x+y", line={"color": cmap[lab]},
            error_y={"type": "data", "array": [_nan0(v) for v in c["forgetting_se"]], "visible": True}))
    if level is not None and not math.isnan(level):
        fig.add_vline(x=level, line_dash="dot", annotation_text=f"matched gain {level:.3g}")
    kind = curves["kind"].iloc[0]
    unit = "nats" if kind == "nll" else "accuracy"
    fig.update_layout(title=title or "interpolation paths θ(α) = θ0 + α·Δ (base at the origin)",
                      xaxis_title=f"target gain vs α=0 ({unit})", yaxis_title=f"general kept: −forgetting vs α=0 ({unit})",
                      height=480)
    return fig


def metric_scatter(df: pd.DataFrame, metric: str, against: str, r: dict | None = None) -> go.Figure:
    fig = go.Figure()
    d = df[[metric, against, "label", "run_id"]].dropna() if len(df) and metric in df and against in df else pd.DataFrame()
    if len(d):
        cmap = colors(d["label"])
        for lab, g in d.groupby("label"):
            fig.add_trace(go.Scatter(x=g[metric], y=g[against], mode="markers", name=str(lab), text=g["run_id"],
                                     marker={"size": 11, "color": cmap[str(lab)]}))
    t = f"{metric.removeprefix('diag:')} vs {against}"
    if r:
        t += f" — Pearson {r.get('pearson', math.nan):.3f}, Spearman {r.get('spearman', math.nan):.3f} (n={r.get('n')})"
    fig.update_layout(title=t, xaxis_title=metric.removeprefix("diag:"), yaxis_title=against, height=420)
    return fig


def loss_figure(log: pd.DataFrame, title: str = "training loss") -> go.Figure:
    fig = go.Figure()
    if len(log) and {"step", "loss"} <= set(log.columns):
        fig.add_trace(go.Scatter(x=log["step"], y=log["loss"], mode="lines+markers", name="loss"))
        if "lr" in log:
            fig.add_trace(go.Scatter(x=log["step"], y=log["lr"], mode="lines", name="lr", yaxis="y2",
                                     line={"dash": "dot"}))
            fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": "lr", "showgrid": False})
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="loss", height=360)
    return fig


def benchmark_figure(table: pd.DataFrame, title: str = "per-benchmark change (tuned − base)") -> go.Figure:
    fig = go.Figure()
    if len(table):
        fig.add_trace(go.Bar(x=table["benchmark"], y=table["delta"],
                             error_y={"type": "data", "array": [_nan0(v) for v in table["se"]], "visible": True}))
    fig.update_layout(title=title, yaxis_title="Δ (accuracy or nats)", height=360)
    return fig


def reward_figure(curves: pd.DataFrame, title: str = "reward per step (mean over seeds)") -> go.Figure:
    """Logged reward_mean per step, one line per objective (seeds averaged)."""
    fig = go.Figure()
    if len(curves):
        cmap = colors(sorted(curves["objective"].unique()))
        for obj, g in curves.groupby("objective", sort=True):
            m = g.groupby("step")["reward"].mean()
            fig.add_trace(go.Scatter(x=m.index, y=m.values, mode="lines", name=str(obj), line={"color": cmap[obj]}))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="reward (mean of the step's samples)",
                      template="plotly_white", height=380)
    return fig
