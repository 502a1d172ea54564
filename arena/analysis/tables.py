"""Plain-text tables of analysis results: `arena analyze` (diagnostics) and `arena interpolate` (the curve).

The diagnostics table's columns and the summary's lines come from the metric registry
(arena.analysis.metrics), so a registered metric shows up without editing this module.
"""

from __future__ import annotations

import math
import re

from arena.analysis.metrics import summary_specs, table_specs


def short_name(module: str) -> str:
    """'model.layers.10.self_attn.q_proj' -> 'L10.q_proj'."""
    m = re.match(r"^.*\.layers\.(\d+)\..*?([^.]+)$", module)
    return f"L{m.group(1)}.{m.group(2)}" if m else module


def _g(x, fmt="{:.4g}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return fmt.format(x)


def format_table(diag: dict) -> str:
    """One row per module and a mean row, one column per registered scalar with a `table_rank`."""
    specs = table_specs()
    cols = [("module", 15)] + [(s.label, s.table_width) for s in specs]
    head = " ".join(f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, w) in enumerate(cols))
    lines = [head, "-" * len(head)]

    def row(label, vals):
        return " ".join([f"{label:<15}"] + [f"{_g(v):>{w}}" for v, (_, w) in zip(vals, cols[1:])])

    for name, m in diag["modules"].items():
        lines.append(row(short_name(name), [s.value(m) for s in specs]))
    sm = diag["summary"]
    lines.append("-" * len(head))
    lines.append(row("mean", [sm.get(s.key) for s in specs]))
    return "\n".join(lines)


def format_summary(diag: dict) -> str:
    """The summary scalars (registry order), the timings and what each distribution held."""
    lines = ["summary (mean over modules):"]
    summary = diag["summary"]
    for s in summary_specs():
        if s.key in summary:
            lines.append(f"  {s.key:24s} {_g(summary[s.key], '{:.6g}')}")
    t = diag["timings"]
    lines.append("timings (s): " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in t.items()))
    for d, i in diag["distributions"].items():
        lines.append(f"{d}: {i['prompts']} prompts, {i['tokens']} tokens (base activations "
                     f"{'cached' if i['base_cached'] else 'captured now'}); common prompt prefix "
                     f"{i['common_prefix_tokens']} tokens, {i['repeated_prefix_share']:.0%} of the rows repeat it")
    return "\n".join(lines)


def format_curve(result: dict) -> str:
    """The interpolation curve: one row per α with each axis' value, SE and paired delta; (a)/(b) marked."""
    suites = result["suites"]
    unit = "NLL" if result["scorer"]["orientation"] == "nll" else "score"
    head = f"{'alpha':>6} {'path':9}"
    for ax in suites:
        head += f" {ax + ' ' + unit:>14} {'± se':>7} {'Δ vs α=0':>9} {'± se':>7}"
    lines = [head, "-" * len(head)]
    best = result.get("best") or {}
    marks: dict = {}
    for rule, tag in (("constrained", "a"), ("knee", "b")):
        a = (best.get(rule) or {}).get("alpha")
        if a is not None:
            marks.setdefault(a, []).append(tag)

    def num(x, fmt):
        return format(x, fmt) if isinstance(x, (int, float)) and not math.isnan(x) else "-"

    for p in result["points"]:
        row = f"{p['alpha']:>6g} {p['path']:9}"
        for ax in suites:
            s = p[ax]
            row += (f" {num(s['value'], '>14.4f')} {num(s['se'], '>7.4f')} {num(s.get('delta'), '>+9.4f')}"
                    f" {num(s.get('delta_se'), '>7.4f'):>7}")
        if p["alpha"] in marks:
            row += "  <- " + ",".join(f"({m})" for m in marks[p["alpha"]])
        lines.append(row)
    if best:
        c, k = best["constrained"], best["knee"]
        lines.append(f"(a) constrained: alpha={c['alpha']:g} ({c['rule']})")
        lines.append("(b) knee: " + (f"alpha={k['alpha']:g} (distance {k['distance']:.3f})"
                                     if k.get("alpha") is not None else f"none ({k.get('reason')})"))
    sc = result["scorer"]
    lines.append(f"scorer {sc['name']}: {sc['description']} ({'lower' if sc['orientation'] == 'nll' else 'higher'} "
                 f"is better on both axes)")
    return "\n".join(lines)
