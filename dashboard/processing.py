"""The results layer: every record.json under a folder as one DataFrame, filters, Pareto fronts,
leaderboards and exports. Pure pandas/numpy: the dashboard and `arena report` import it without
importing torch or arena's training stack (a test checks this).

Two scales, because a 135M model's accuracies often sit at the floor (DESIGN.md "Pilot"):

    accuracy  x = target gain  (tuned − base target-axis accuracy)      y = forgetting (base − tuned general)
    proxy     x = plasticity   (base − tuned held-out target NLL, nats)  y = forgetting (general ΔCE, nats)

On both, "better" is more x and less y; the Pareto front maximises (general, target), i.e. x up
and y down. The proxy values come from the evaluation ("eval" in the record); where a run has no
evaluation its plasticity falls back to the training probes (column `plasticity_source`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd

SUPPORTED_SCHEMA = 1

SCALES = {
    "accuracy": {"x": "target_gain", "x_se": "target_gain_se", "y": "forgetting", "y_se": "forgetting_se",
                 "x_label": "target gain (accuracy, tuned − base)",
                 "y_label": "forgetting (general accuracy, base − tuned)", "unit": "accuracy"},
    "proxy": {"x": "plasticity_nll", "x_se": "plasticity_nll_se", "y": "forgetting_nll", "y_se": "forgetting_nll_se",
              "x_label": "plasticity (held-out target NLL drop, nats)",
              "y_label": "forgetting (general ΔCE, nats)", "unit": "nats"},
}

GROUP = ["model", "target", "objective"]
RUN_KEYS = ["model", "target", "objective", "label", "method"]
DIAG_PREFIX = "diag:"


@dataclass
class Results:
    """`df`: one row per run folder (every state); `records`: key -> record; `warnings`: what was skipped."""

    root: Path
    df: pd.DataFrame
    records: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    @property
    def done(self) -> pd.DataFrame:
        return self.df[self.df["state"] == "done"] if len(self.df) else self.df


# ------------------------------------------------------------------ loading

def _get(d, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def run_state(rec: dict) -> str:
    """done | incomplete | failed | interrupted | running: only 'done' is a result."""
    status = rec.get("status")
    sweep = rec.get("sweep") if isinstance(rec.get("sweep"), dict) else None
    if status == "failed":
        return "interrupted" if rec.get("retryable") else "failed"
    if status != "done":
        return str(status or "unknown")
    if sweep is None:
        return "done"  # a run trained and scored by hand (arena train / eval / analyze)
    s = sweep.get("status")
    if s == "complete":
        return "done"
    if s in ("failed", "interrupted"):
        return s
    return "incomplete"


def flatten(rec: dict, key: str) -> dict:
    """One leaderboard row from a record (missing parts are NaN, never an error)."""
    cfg = rec.get("config") or {}
    sweep = rec.get("sweep") if isinstance(rec.get("sweep"), dict) else {}
    method = _get(rec, "method", "name") or _get(cfg, "method", "name")
    tr = rec.get("train") or {}
    row = {
        "key": key, "run_id": rec.get("run_id") or Path(key).name, "sweep": sweep.get("name") or Path(key).parent.name,
        "state": run_state(rec), "status": rec.get("status"), "error": rec.get("error") or sweep.get("error"),
        "model": _get(cfg, "model", "name") or _get(rec, "model", "name"),
        "target": rec.get("target") or _get(cfg, "target", "name"),
        "objective": rec.get("objective") if isinstance(rec.get("objective"), str) else _get(cfg, "objective", "name"),
        "method": method, "label": sweep.get("label") or method,
        "seed": _get(cfg, "train", "seed"), "lr": _num(_get(rec, "method", "lr", default=_get(cfg, "train", "lr"))),
        "steps": _num(tr.get("steps", _get(cfg, "train", "steps"))), "tokens": _num(tr.get("tokens")),
        "trainable_params": _num(_get(rec, "method", "trainable_params")),
        "trainable_fraction": _num(_get(rec, "method", "trainable_fraction")),
        "train_s": _num(tr.get("seconds")), "tokens_per_s": _num(tr.get("tokens_per_second")),
        "peak_memory_mb": _num(tr.get("peak_memory_mb")), "first_loss": _num(tr.get("first_loss")),
        "last_loss": _num(tr.get("last_loss")), "created": rec.get("created"), "finished": rec.get("finished"),
    }
    stage_s = sum(_num(s.get("seconds")) for s in (sweep.get("stages") or {}).values() if isinstance(s, dict)
                  and not math.isnan(_num(s.get("seconds"))))
    row["wall_s"] = _num(_get(rec, "timings", "total_s")) + stage_s if _get(rec, "timings", "total_s") is not None \
        else math.nan
    for k in ("schema_version",):
        row[k] = rec.get(k)
    row.update(_eval_columns(rec))
    row.update(_probe_fallback(rec, row))
    summary = _get(rec, "diagnostics", "summary") or {}
    for k, v in summary.items():
        row[DIAG_PREFIX + k] = _num(v)
    interp = rec.get("interpolation") if isinstance(rec.get("interpolation"), dict) else {}
    row["interpolation"] = ",".join(sorted(interp)) or None
    return row


def _eval_columns(rec: dict) -> dict:
    cmp = _get(rec, "eval", "compare") or {}
    out = {"has_eval": bool(cmp)}
    if not cmp:
        return out
    tg, fg = cmp.get("target_gain") or {}, cmp.get("forgetting") or {}
    out.update(target_gain=_num(tg.get("value")), target_gain_se=_num(tg.get("se")),
               forgetting=_num(fg.get("value")), forgetting_se=_num(fg.get("se")))
    for axis in ("general", "target"):
        a = _get(cmp, "axes", axis) or {}
        out[f"{axis}_acc_base"], out[f"{axis}_acc"] = _num(a.get("base")), _num(a.get("tuned"))
        out[f"{axis}_complete"] = a.get("complete")
    for name, b in (cmp.get("benchmarks") or {}).items():
        out[f"bench:{name}"] = _num(b.get("tuned"))
        out[f"bench_base:{name}"] = _num(b.get("base"))
        out[f"bench_delta:{name}"] = _num(b.get("delta"))
        out[f"bench_se:{name}"] = _num(b.get("se"))
        out[f"bench_n:{name}"] = _num(b.get("n"))
    px = cmp.get("proxies") or {}
    if "general_nll" in px:
        out["forgetting_nll"], out["forgetting_nll_se"] = _num(px["general_nll"].get("delta")), _num(px["general_nll"].get("se"))
    if "target_nll" in px:
        out["plasticity_nll"], out["plasticity_nll_se"] = -_num(px["target_nll"].get("delta")), _num(px["target_nll"].get("se"))
        out["plasticity_source"] = "eval"
    out["eval_limit"] = _get(rec, "eval", "tuned", "settings", "limit")
    return out


def _probe_fallback(rec: dict, row: dict) -> dict:
    if not math.isnan(_num(row.get("plasticity_nll"))):
        return {}
    b, t = _get(rec, "probes", "base", "target_nll"), _get(rec, "probes", "tuned", "target_nll")
    if not (isinstance(b, dict) and isinstance(t, dict)):
        return {}
    return {"plasticity_nll": _num(b.get("nll")) - _num(t.get("nll")),
            "plasticity_nll_se": math.hypot(_num(b.get("se")), _num(t.get("se"))), "plasticity_source": "probe"}


def load_results(root, skip_hidden: bool = True) -> Results:
    """Every record.json under `root` (a sweep folder or a folder of sweeps). Unreadable records are
    skipped and listed in `warnings`; they never stop the load."""
    root = Path(root)
    records, rows, warns = {}, [], []
    if not root.exists():
        return Results(root, pd.DataFrame(), {}, [f"{root}: no such folder"])
    paths = [root / "record.json"] if (root / "record.json").is_file() else sorted(root.rglob("record.json"))
    for p in paths:
        rel = p.parent.relative_to(root) if p.parent != root else Path(p.parent.name)
        if skip_hidden and any(part.startswith(".") for part in rel.parts):
            continue
        key = rel.as_posix()
        try:
            rec = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            warns.append(f"{p}: unreadable record skipped ({type(e).__name__}: {e})")
            continue
        if not isinstance(rec, dict):
            warns.append(f"{p}: record is not a JSON object; skipped")
            continue
        if (rec.get("schema_version") or 0) > SUPPORTED_SCHEMA:
            warns.append(f"{p}: schema_version {rec.get('schema_version')} is newer than this reader "
                         f"({SUPPORTED_SCHEMA}); shown as far as understood")
        try:
            rows.append(flatten(rec, key))
        except Exception as e:  # noqa: BLE001 — a malformed record must not take the dashboard down
            warns.append(f"{p}: malformed record skipped ({type(e).__name__}: {e})")
            continue
        records[key] = rec
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["sweep", "target", "objective", "label", "seed"], na_position="last", kind="stable")
        df = df.reset_index(drop=True)
    return Results(root, df, records, warns)


# ------------------------------------------------------------------ filters and scales

def options(df: pd.DataFrame, column: str) -> list:
    if not len(df) or column not in df:
        return []
    return sorted(v for v in df[column].dropna().unique())


def filter_runs(df: pd.DataFrame, **selected: Optional[Iterable]) -> pd.DataFrame:
    """Keep rows whose column is in the selected values (None or empty: no filter on that column)."""
    out = df
    for col, values in selected.items():
        if values is None or col not in out:
            continue
        values = list(values)
        if values:
            out = out[out[col].isin(values)]
    return out


def has_scale(df: pd.DataFrame, scale: str) -> bool:
    x, y = SCALES[scale]["x"], SCALES[scale]["y"]
    return len(df) > 0 and x in df and y in df and bool((df[x].notna() & df[y].notna()).any())


def pick_scale(df: pd.DataFrame) -> str:
    """'accuracy' unless the target accuracies sit at the floor (every run 0 before and after) or are
    missing, in which case the continuous proxies are the axes that carry signal."""
    acc = has_scale(df, "accuracy")
    floor = acc and "target_acc" in df and bool(((df["target_acc"].fillna(0) == 0)
                                                 & (df["target_acc_base"].fillna(0) == 0)).all())
    if acc and not floor:
        return "accuracy"
    return "proxy" if has_scale(df, "proxy") or not acc else "accuracy"


# ------------------------------------------------------------------ Pareto front

def pareto_mask(x: Iterable[float], y: Iterable[float]) -> np.ndarray:
    """Non-dominated points when maximising both x and y (NaN points are never on the front).

    A point is dominated when another is >= on both and > on one. O(n²); leaderboards are small.
    """
    x, y = np.asarray(list(x), float), np.asarray(list(y), float)
    ok = ~(np.isnan(x) | np.isnan(y))
    mask = np.zeros(len(x), bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        mask[i] = not dominated.any()
    return mask


def pareto_front(df: pd.DataFrame, scale: str, by: Optional[list] = None) -> pd.Series:
    """Boolean Series: on the (general, target) front — gain up, forgetting down — within each group."""
    s = SCALES[scale]
    if not len(df) or s["x"] not in df or s["y"] not in df:
        return pd.Series(False, index=df.index)
    by = [c for c in (by or GROUP) if c in df]
    out = pd.Series(False, index=df.index)
    groups = df.groupby(by, dropna=False) if by else [(None, df)]
    for _, g in groups:
        out.loc[g.index] = pareto_mask(g[s["x"]], -g[s["y"]])
    return out


# ------------------------------------------------------------------ leaderboard

def _agg(values: pd.Series, ses: Optional[pd.Series]) -> tuple[float, float, str]:
    v = values.dropna()
    if len(v) == 0:
        return math.nan, math.nan, ""
    if len(v) >= 2:
        return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))), f"seed SEM (n={len(v)})"
    se = float(ses.loc[v.index].iloc[0]) if ses is not None and len(ses.loc[v.index].dropna()) else math.nan
    return float(v.iloc[0]), se, "eval SE (1 seed)"


def leaderboard(df: pd.DataFrame, scale: Optional[str] = None) -> pd.DataFrame:
    """One row per (model, target, objective, method label): means over seeds with error bars.

    Error bars: the standard error of the mean over seeds when there are two or more seeds (it holds
    both seed and evaluation noise), else the evaluation's own SE — and then seed variance was not
    measured (`err_kind` says which).
    """
    done = df[df["state"] == "done"] if len(df) and "state" in df else df
    if not len(done):
        return pd.DataFrame()
    scale = scale or pick_scale(done)
    keys = [k for k in RUN_KEYS if k in done]
    rows = []
    for key, g in done.groupby(keys, dropna=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row["seeds"] = int(g["seed"].nunique()) if "seed" in g else len(g)
        row["runs"] = len(g)
        for sc in SCALES.values():
            for ax in ("x", "y"):
                col, se_col = sc[ax], sc[f"{ax}_se"]
                m, e, kind = _agg(g[col], g[se_col] if se_col in g else None) if col in g else (math.nan, math.nan, "")
                row[col], row[col + "_err"] = m, e
                if sc is SCALES[scale] and ax == "x" or (sc is SCALES[scale] and not row.get("err_kind")):
                    row["err_kind"] = kind
        for col in ("general_acc", "target_acc", "general_acc_base", "target_acc_base", "trainable_params", "trainable_fraction",
                    "train_s", "wall_s", "tokens_per_s", "lr"):
            if col in g:
                row[col] = float(g[col].mean())
        if "peak_memory_mb" in g:
            row["peak_memory_mb"] = float(g["peak_memory_mb"].max())
        for col in g.columns:
            if col.startswith(("bench_delta:", DIAG_PREFIX)):
                row[col] = float(g[col].mean())
        row["keys"] = ",".join(g["key"])
        rows.append(row)
    lb = pd.DataFrame(rows)
    s = SCALES[scale]
    if s["x"] in lb and s["y"] in lb:
        lb["forgetting_per_gain"] = np.where(lb[s["x"]] > 0, lb[s["y"]] / lb[s["x"]], np.nan)
        lb["pareto"] = pareto_front(lb, scale)
        lb = lb.sort_values(["pareto", s["x"]], ascending=[False, False], kind="stable").reset_index(drop=True)
    else:
        lb["pareto"] = False
    lb.attrs["scale"] = scale
    return lb


def seed_values(df: pd.DataFrame, label: str, column: str, **where) -> pd.Series:
    d = filter_runs(df[df["state"] == "done"], label=[label], **{k: [v] for k, v in where.items()})
    return d[column].dropna()


def compare_two(a: pd.Series, b: pd.Series, a_se: float = math.nan, b_se: float = math.nan) -> dict:
    """Is mean(a) − mean(b) more than noise? Welch's t over seeds when both have >= 2 seeds, else a
    z-score from the evaluation SEs (seed variance not measured). within_noise: |diff| < 2 SE."""
    a, b = pd.Series(a).dropna(), pd.Series(b).dropna()
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if len(a) >= 2 and len(b) >= 2:
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se = math.sqrt(va + vb)
        dof = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1)) + (vb ** 2 / (len(b) - 1))) if (va + vb) > 0 else math.inf
        t = diff / se if se > 0 else (math.inf if diff else 0.0)
        p = _t_pvalue(t, dof)
        return {"diff": diff, "se": se, "test": "welch", "stat": t, "dof": dof, "p": p,
                "within_noise": not (p < 0.05), "seeds": (len(a), len(b))}
    se = math.hypot(a_se if not math.isnan(a_se) else 0.0, b_se if not math.isnan(b_se) else 0.0)
    z = diff / se if se > 0 else (math.inf if diff else 0.0)
    return {"diff": diff, "se": se, "test": "eval-se", "stat": z, "p": math.nan,
            "within_noise": bool(abs(z) < 2) if not math.isnan(z) else True, "seeds": (len(a), len(b)),
            "note": "one seed: seed variance was not measured; only evaluation noise is accounted for"}


def _t_pvalue(t: float, dof: float) -> float:
    if math.isinf(t):
        return 0.0
    try:
        from scipy import stats

        return float(2 * stats.t.sf(abs(t), dof))
    except ImportError:  # normal approximation
        return float(math.erfc(abs(t) / math.sqrt(2)))


# ------------------------------------------------------------------ per-run detail

def benchmark_table(rec: dict) -> pd.DataFrame:
    cmp = _get(rec, "eval", "compare") or {}
    plan = _get(rec, "eval", "tuned", "plan") or {}
    axis_of = {b: axis for axis, names in plan.items() for b in names}
    rows = [{"benchmark": n, "axis": axis_of.get(n, ""), "base": b.get("base"), "tuned": b.get("tuned"),
             "delta": b.get("delta"), "se": b.get("se"), "n": b.get("n"), "paired": b.get("paired")}
            for n, b in (cmp.get("benchmarks") or {}).items()]
    for name, p in (cmp.get("proxies") or {}).items():
        rows.append({"benchmark": f"{name} (proxy, nats)", "axis": "general" if name == "general_nll" else "target",
                     "base": p.get("base"), "tuned": p.get("tuned"), "delta": p.get("delta"), "se": p.get("se"),
                     "n": p.get("n"), "paired": True})
    return pd.DataFrame(rows)


def module_table(rec: dict) -> pd.DataFrame:
    """Per-module diagnostics of one run (CSD, geometry, spectral) as flat columns."""
    mods = _get(rec, "diagnostics", "modules") or {}
    rows = []
    for name, m in mods.items():
        row = {"module": name}
        for d, c in (m.get("csd") or {}).items():
            for k, v in (c or {}).items():
                row[f"csd_{k}_{d}"] = v
        for d, g in (m.get("geometry") or {}).items():
            for k, v in (g or {}).items():
                row[f"{k}_{d}"] = v
        for k in ("frobenius_norm", "effective_rank", "principal_fraction", "top_sv_rel_change"):
            row[f"dw_{k}"] = _get(m, "spectral", k)
        rows.append(row)
    return pd.DataFrame(rows)


def train_log(run_dir) -> pd.DataFrame:
    """train_log.jsonl as a DataFrame (a line cut by a crash is skipped)."""
    p = Path(run_dir) / "train_log.jsonl"
    rows = []
    if p.is_file():
        for ln in p.read_text().splitlines():
            try:
                rows.append(json.loads(ln))
            except json.JSONDecodeError:
                continue
    return pd.DataFrame(rows)


def metric_correlations(df: pd.DataFrame, against: str, metrics: Optional[list] = None) -> pd.DataFrame:
    """Pearson and Spearman correlation of each diagnostic with `against` (e.g. forgetting) across runs."""
    done = df[df["state"] == "done"] if "state" in df else df
    metrics = metrics or [c for c in done.columns if c.startswith(DIAG_PREFIX)]
    rows = []
    for m in metrics:
        d = done[[m, against]].dropna() if against in done else pd.DataFrame()
        n = len(d)
        ok = n >= 3 and d[m].nunique() > 1 and d[against].nunique() > 1
        rows.append({"metric": m.removeprefix(DIAG_PREFIX), "n": n,
                     "pearson": float(d[m].corr(d[against])) if ok else math.nan,
                     "spearman": float(d[m].corr(d[against], method="spearman")) if ok else math.nan})
    return pd.DataFrame(rows, columns=["metric", "n", "pearson", "spearman"])


from dashboard.exports import EXPORT_COLUMNS, _fmt, export, latex_escape, to_latex, to_markdown  # noqa: E402,F401
from dashboard.matched import interpolation_curves, matched_plasticity  # noqa: E402  (re-exported)

__all__ = ["Results", "SCALES", "load_results", "flatten", "filter_runs", "options", "pick_scale", "has_scale",
           "pareto_mask", "pareto_front", "leaderboard", "compare_two", "seed_values", "benchmark_table",
           "module_table", "train_log", "metric_correlations", "export", "to_markdown", "to_latex",
           "interpolation_curves", "matched_plasticity"]
