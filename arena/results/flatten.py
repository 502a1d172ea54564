"""A run record as one flat leaderboard row, and the run's state.

Missing parts of a record are NaN in the row, never an error: a record is whatever its writers got
to. The columns of the two scales (`arena.results.scales`):

    target_gain, forgetting          from eval.compare (accuracy: tuned − base target axis, base − tuned general)
    plasticity_nll, forgetting_nll   from eval.compare.proxies (−Δ held-out target NLL, +Δ general NLL)

Where a run has no evaluation its plasticity falls back to the training probes (base − tuned
held-out target NLL, SE = hypot of the two SEs); `plasticity_source` says which.
"""

from __future__ import annotations

import math
from pathlib import Path

from arena.results.run_record import RunRecord

DIAG_PREFIX = "diag:"


def get_path(d, *path, default=None):
    """d[p0][p1]... or `default` where a step is missing or not a dict."""
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def to_float(v) -> float:
    """float(v), NaN where v is missing or not a number."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def run_state(rec: RunRecord) -> str:
    """done | incomplete | failed | interrupted | running: only 'done' is a result."""
    sweep = rec.sweep if isinstance(rec.sweep, dict) else None
    if rec.status == "failed":
        return "interrupted" if rec.retryable else "failed"
    if rec.status != "done":
        return str(rec.status or "unknown")
    if sweep is None:
        return "done"  # a run trained and scored by hand (arena train / eval / analyze)
    s = sweep.get("status")
    if s == "complete":
        return "done"
    if s in ("failed", "interrupted"):
        return s
    return "incomplete"


def flatten(rec: RunRecord, key: str) -> dict:
    """One leaderboard row from a record (missing parts are NaN, never an error)."""
    cfg = rec.config or {}
    sweep = rec.sweep if isinstance(rec.sweep, dict) else {}
    method = get_path(rec.method, "name") or get_path(cfg, "method", "name")
    objective = rec.objective if isinstance(rec.objective, str) else get_path(cfg, "objective", "name")
    tr = rec.train or {}
    row = {
        "key": key, "run_id": rec.run_id or Path(key).name, "sweep": sweep.get("name") or Path(key).parent.name,
        "state": run_state(rec), "status": rec.status, "error": rec.error or sweep.get("error"),
        "model": get_path(cfg, "model", "name") or get_path(rec.model, "name"),
        "target": rec.target or get_path(cfg, "target", "name"),
        # a sweep's objective label (two entries of one objective) stands for the objective everywhere
        "objective": sweep.get("objective_label") or objective, "objective_name": objective,
        "method": method, "label": sweep.get("label") or method,
        # an lr_scan run (arena.sweeps.spec.LrScanSpec): lr = lr_of's lr x lr_factor; a main run is its own lr_of, x 1
        "lr_of": sweep.get("lr_of") or sweep.get("label") or method, "lr_factor": to_float(sweep.get("lr_factor", 1.0)),
        "seed": get_path(cfg, "train", "seed"),
        "lr": to_float(get_path(rec.method, "lr", default=get_path(cfg, "train", "lr"))),
        "steps": to_float(tr.get("steps", get_path(cfg, "train", "steps"))), "tokens": to_float(tr.get("tokens")),
        "trainable_params": to_float(get_path(rec.method, "trainable_params")),
        "trainable_fraction": to_float(get_path(rec.method, "trainable_fraction")),
        "train_s": to_float(tr.get("seconds")), "tokens_per_s": to_float(tr.get("tokens_per_second")),
        "peak_memory_mb": to_float(tr.get("peak_memory_mb")), "first_loss": to_float(tr.get("first_loss")),
        "last_loss": to_float(tr.get("last_loss")), "created": rec.created, "finished": rec.finished,
    }
    stage_s = sum(to_float(s.get("seconds")) for s in (sweep.get("stages") or {}).values() if isinstance(s, dict)
                  and not math.isnan(to_float(s.get("seconds"))))
    total_s = get_path(rec.timings, "total_s")
    row["wall_s"] = to_float(total_s) + stage_s if total_s is not None else math.nan
    row["schema_version"] = rec.schema_version
    row.update(_eval_columns(rec))
    row.update(_probe_fallback(rec, row))
    for k, v in (get_path(rec.diagnostics, "summary") or {}).items():
        row[DIAG_PREFIX + k] = to_float(v)
    interp = rec.interpolation if isinstance(rec.interpolation, dict) else {}
    row["interpolation"] = ",".join(sorted(interp)) or None
    return row


def _eval_columns(rec: RunRecord) -> dict:
    cmp = get_path(rec.eval, "compare") or {}
    out = {"has_eval": bool(cmp)}
    if not cmp:
        return out
    tg, fg = cmp.get("target_gain") or {}, cmp.get("forgetting") or {}
    out.update(target_gain=to_float(tg.get("value")), target_gain_se=to_float(tg.get("se")),
               forgetting=to_float(fg.get("value")), forgetting_se=to_float(fg.get("se")))
    for axis in ("general", "target"):
        a = get_path(cmp, "axes", axis) or {}
        out[f"{axis}_acc_base"], out[f"{axis}_acc"] = to_float(a.get("base")), to_float(a.get("tuned"))
        out[f"{axis}_complete"] = a.get("complete")
    for name, b in (cmp.get("benchmarks") or {}).items():
        out[f"bench:{name}"] = to_float(b.get("tuned"))
        out[f"bench_base:{name}"] = to_float(b.get("base"))
        out[f"bench_delta:{name}"] = to_float(b.get("delta"))
        out[f"bench_se:{name}"] = to_float(b.get("se"))
        out[f"bench_n:{name}"] = to_float(b.get("n"))
    px = cmp.get("proxies") or {}
    if "general_nll" in px:
        out["forgetting_nll"] = to_float(px["general_nll"].get("delta"))
        out["forgetting_nll_se"] = to_float(px["general_nll"].get("se"))
    if "target_nll" in px:
        out["plasticity_nll"] = -to_float(px["target_nll"].get("delta"))
        out["plasticity_nll_se"] = to_float(px["target_nll"].get("se"))
        out["plasticity_source"] = "eval"
    out["eval_limit"] = get_path(rec.eval, "tuned", "settings", "limit")
    return out


def _probe_fallback(rec: RunRecord, row: dict) -> dict:
    if not math.isnan(to_float(row.get("plasticity_nll"))):
        return {}
    b, t = get_path(rec.probes, "base", "target_nll"), get_path(rec.probes, "tuned", "target_nll")
    if not (isinstance(b, dict) and isinstance(t, dict)):
        return {}
    return {"plasticity_nll": to_float(b.get("nll")) - to_float(t.get("nll")),
            "plasticity_nll_se": math.hypot(to_float(b.get("se")), to_float(t.get("se"))), "plasticity_source": "probe"}
