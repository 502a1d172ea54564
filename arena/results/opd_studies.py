"""The OPD studies view: every finished on-policy distillation run with what the success conditions
of arXiv 2604.13016 say predicts its outcome, side by side.

One row per OPD run (objective name `opd`, whatever its sweep label):

- the arm: sweep objective label, start model (`model.init_from` folder name, "base" without),
  teacher (folder name) and the teacher's own held-out greedy accuracy (from its record, when it
  is an arena run), the target's prompt style, and `max_new_tokens`;
- the conditions: top-k overlap between teacher and student on the student's rollouts at the
  first logged step and over the last `tail` steps (`overlap`, k = `objective.diag_k`; the paper
  uses k = 16), teacher mass on the shared set, and the reverse KL at the start and the end;
- the outcome: held-out greedy accuracy gain over the start model with its SE (paired where the
  records keep per-problem outcomes), and the general ΔCE proxy when evaluated.

`studies` names which rows answer which of the five studies, by what differs between them (teacher,
start model, prompt style, response length). Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import pandas as pd

from arena.results.flatten import get_path, to_float
from arena.results.load import Results
from arena.results.objectives import heldout_columns


def _teacher_accuracy(ref: Optional[str], run_dir: Path) -> float:
    """The teacher run's own held-out greedy accuracy. A relative `ref` was relative to the folder the
    sweep ran in, which is unknown here: tried as given, then against each ancestor of the run."""
    if not ref:
        return math.nan
    for base in (Path("."), *run_dir.resolve().parents):
        p = (Path(ref) if Path(ref).is_absolute() else base / ref) / "record.json"
        if p.is_file():
            try:
                rec = json.loads(p.read_text())
            except (OSError, ValueError):
                return math.nan
            return to_float(get_path(rec, "probes", "tuned", "greedy", "accuracy"))
    return math.nan


def opd_runs(res: Results, tail: int = 5) -> pd.DataFrame:
    rows = []
    done = res.done
    if not len(done):
        return pd.DataFrame()
    name_col = "objective_name" if "objective_name" in done else "objective"
    for r in done[done[name_col] == "opd"].itertuples():
        rec = res.records[r.key]
        cfg = rec.config or {}
        obj = cfg.get("objective") or {}
        teacher = obj.get("teacher")
        init = get_path(cfg, "model", "init_from")
        log = res.train_log(r.key)
        row = {"key": r.key, "arm": r.objective, "seed": r.seed, "target": r.target,
               "start": Path(init).name if init else "base", "teacher": Path(str(teacher)).name if teacher else None,
               "teacher_acc": _teacher_accuracy(teacher, res.root / r.key),
               "prompt_style": get_path(cfg, "target", "prompt_style") or "default",
               "max_new_tokens": obj.get("max_new_tokens"), "diag_k": obj.get("diag_k", 8),
               "forgetting_nll": to_float(getattr(r, "forgetting_nll", math.nan)), **heldout_columns(rec)}
        if len(log):
            for col, name in (("overlap", "overlap"), ("shared_mass", "shared_mass"), ("reverse_kl", "reverse_kl")):
                if col in log:
                    row[f"{name}_first"] = float(log[col].iloc[0])
                    row[f"{name}_last"] = float(log[col].tail(tail).mean())
            if "response_length" in log:
                row["response_length"] = float(log["response_length"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _varying(df: pd.DataFrame) -> list[str]:
    return [c for c in ("teacher", "start", "prompt_style", "max_new_tokens") if c in df and df[c].astype(str).nunique() > 1]


def opd_summary(res: Results) -> Optional[dict]:
    """{"runs": table, "varying": [columns that differ between the runs], "note": str} or None."""
    runs = opd_runs(res)
    if not len(runs):
        return None
    k = sorted({int(x) for x in runs["diag_k"].dropna()})
    note = (f"{len(runs)} OPD run(s). Overlap = |top-k teacher ∩ top-k student| / k on the student's rollouts "
            f"(k = {', '.join(map(str, k))}; the paper uses 16), first logged step and mean of the last 5; "
            "gain = held-out greedy accuracy after − at the start model, ± its SE (paired over the same problems "
            "where the records keep per-problem outcomes, else the two binomial SEs combined). Columns that "
            "differ between the runs: "
            f"{', '.join(_varying(runs)) or 'none'}.")
    if runs["seed"].nunique() < 2:
        note += " One seed per arm: seed variance was not measured."
    return {"runs": runs, "varying": _varying(runs), "note": note}


def display_table(summary: dict) -> pd.DataFrame:
    r = summary["runs"]

    def f(col, fmt):
        return [fmt.format(v) if isinstance(v, (int, float)) and v == v else "–" for v in r.get(col, [math.nan] * len(r))]

    gain = [f"{100 * g:+.1f} ± {100 * s:.1f} pp" if g == g else "–"
            for g, s in zip(r.get("heldout_gain", [math.nan] * len(r)), r.get("heldout_gain_se", [math.nan] * len(r)))]
    return pd.DataFrame({
        "arm": r["arm"], "seed": r["seed"], "start": r["start"], "teacher": r["teacher"],
        "teacher acc": f("teacher_acc", "{:.3f}"), "prompts": r["prompt_style"], "max_new_tokens": r["max_new_tokens"],
        "overlap first→last": [f"{a:.3f} → {b:.3f}" if a == a else "–"
                               for a, b in zip(r.get("overlap_first", [math.nan] * len(r)), r.get("overlap_last", [math.nan] * len(r)))],
        "reverse KL first→last": [f"{a:.3f} → {b:.3f}" if a == a else "–"
                                  for a, b in zip(r.get("reverse_kl_first", [math.nan] * len(r)),
                                                  r.get("reverse_kl_last", [math.nan] * len(r)))],
        "start acc": f("start_acc", "{:.3f}"), "held-out gain": gain, "general ΔCE": f("forgetting_nll", "{:+.4f}")})
