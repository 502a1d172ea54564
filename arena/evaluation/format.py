"""Plain-text tables of evaluation results and base-vs-tuned comparisons (what `arena eval` prints)."""

from __future__ import annotations

import math

from arena.evaluation.stats import fmt


def _pm(x: float | None, se: float | None, digits: int = 3) -> str:
    return f"{fmt(x, digits)} ± {fmt(se, digits)}"


def _n(t: dict) -> str:
    n = str(t.get("n", "?"))
    if "n_units" in t:
        n += f" ({t['n_units']} inst)"
    if "n_subtasks" in t:
        n += f" ({t['n_subtasks']} subtasks)"
    return n


def _signif(delta: float, se: float) -> str:
    if se is None or math.isnan(se) or se == 0 or delta is None or math.isnan(delta):
        return ""
    z = abs(delta) / se
    return "  *" if z >= 1.96 else "  (within noise)" if z < 1 else ""


def format_result(r: dict, title: str | None = None) -> str:
    """Per-benchmark score ± SE with n, generation cap and few-shot count; then axes and proxies."""
    lines = []
    s = r.get("settings", {})
    if title:
        lines.append(title)
    lines.append(f"limit {s.get('limit')} (seed {s.get('seed')}), batch {s.get('batch_size')}, {s.get('precision')}, "
                 f"chat template {'on' if s.get('chat_template') else 'off'}, BBH {s.get('bbh_variant')}"
                 + (f" {s['bbh_shots']}-shot" if s.get("bbh_shots") is not None else ""))
    head = f"{'benchmark':<16}{'metric':<26}{'score':>8}{'± se':>9}  {'n':<22}{'gen cap':>8}{'shots':>6}  cached"
    lines += [head, "-" * len(head)]
    for name, t in r.get("tasks", {}).items():
        st = t.get("settings", {})
        metric = t["metric"] + (" (avg)" if "subtasks" in t else "")
        lines.append(f"{name:<16}{metric:<26}{fmt(t['score']):>8}{fmt(t['se']):>9}  {_n(t):<22}"
                     f"{st.get('max_gen_toks') or '-'!s:>8}{st.get('num_fewshot')!s:>6}  "
                     f"{'yes' if t.get('cached') else 'no' if 'cached' in t else '-'}")
        for m, e in (t.get("metrics") or {}).items():
            if m != t["metric"]:
                lines.append(f"{'':<16}{m:<26}{fmt(e['score']):>8}{fmt(e['se']):>9}  {_n(e):<22}")
    for axis, a in (r.get("axes") or {}).items():
        note = "" if a["complete"] else f"  (partial: missing {', '.join(a['missing'])})"
        lines.append(f"{axis} axis: {_pm(a['score'], a['se'])} over {', '.join(a['benchmarks'])}{note}")
    for key, p in (r.get("proxies") or {}).items():
        if isinstance(p, dict) and "score" in p:
            lines.append(f"proxy {key}: {_pm(p['score'], p['se'], 4)} per token (n={p['n']} texts, {p['tokens']} tokens)")
    eng = r.get("engine") or {}
    if eng:
        g, ll = eng.get("generation", {}), eng.get("loglikelihood", {})
        parts = [f"lm-eval {eng.get('lm_eval')} on {eng.get('device')}: {eng.get('eval_s')} s"]
        if g.get("tokens"):
            parts.append(f"generation {g['tokens']} tokens at {g['tokens_per_s']} tok/s")
        if ll.get("tokens"):
            parts.append(f"loglikelihood {ll['tokens']} tokens at {ll['tokens_per_s']} tok/s")
        lines.append("; ".join(parts))
    if r.get("timing"):
        lines.append(f"wall time {r['timing'].get('total_s')} s")
    return "\n".join(lines)


def format_comparison(cmp: dict) -> str:
    """Base vs tuned per benchmark, the axes' changes, target gain and forgetting, with SEs."""
    head = f"{'benchmark':<16}{'base':>17}{'tuned':>17}{'change':>19}  {'n':>6}"
    lines = [head, "-" * len(head)]
    for name, b in cmp.get("benchmarks", {}).items():
        lines.append(f"{name:<16}{_pm(b['base'], b['base_se']):>17}{_pm(b['tuned'], b['tuned_se']):>17}"
                     f"{_pm(b['delta'], b['se']):>19}  {b['n']:>6}{'' if b['paired'] else '  (unpaired)'}"
                     f"{_signif(b['delta'], b['se'])}")
    for axis, a in cmp.get("axes", {}).items():
        lines.append(f"{axis + ' axis':<16}{fmt(a['base']):>17}{fmt(a['tuned']):>17}{_pm(a['delta'], a['se']):>19}"
                     f"{'' if a['complete'] else '  (partial)'}")
    if "target_gain" in cmp:
        g = cmp["target_gain"]
        lines.append(f"target gain: {_pm(g['value'], g['se'])}{_signif(g['value'], g['se'])}")
    if "forgetting" in cmp:
        f = cmp["forgetting"]
        lines.append(f"forgetting (base − tuned general): {_pm(f['value'], f['se'])}{_signif(f['value'], f['se'])}")
    for key, p in cmp.get("proxies", {}).items():
        label = "general ΔCE" if key == "general_nll" else "Δ target NLL"
        lines.append(f"{label}: {fmt(p['base'], 4)} -> {fmt(p['tuned'], 4)}, change {_pm(p['delta'], p['se'], 4)} "
                     f"(paired over {p['n']} texts){_signif(p['delta'], p['se'])}")
    lines.append("* = |change| >= 1.96 SE; 'within noise' = |change| < 1 SE")
    return "\n".join(lines)
