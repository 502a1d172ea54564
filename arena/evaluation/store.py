"""Store an evaluation in a run's record.json under "eval" (atomic; every other key kept).

A second `arena eval --run` with the same settings (limit, seed, batch, precision, chat template,
BBH variant, data folder) adds its benchmarks to the stored ones, so `--suite general` then
`--suite target` end with both; different settings replace the stored evaluation (an axis never
mixes benchmarks scored under different settings).
"""

from __future__ import annotations

from pathlib import Path

from arena.evaluation import stats
from arena.evaluation.api import compare
from arena.records import utc_now
from arena.runs import update_record

_SAME = ("limit", "seed", "batch_size", "chat_template", "precision", "bbh_variant", "bbh_shots", "data_dir",
         "tasks_version")


def _comparable(old: dict, new: dict) -> bool:
    so, sn = old.get("settings") or {}, new.get("settings") or {}
    return all(so.get(k) == sn.get(k) for k in _SAME)


def merge_results(old: dict, new: dict) -> dict:
    """`new` with `old`'s benchmarks and proxies that `new` lacks; axes recomputed over the union."""
    out = dict(new)
    out["tasks"] = {**old.get("tasks", {}), **new.get("tasks", {})}
    plan = {axis: list(ms) for axis, ms in (old.get("plan") or {}).items()}
    for axis, ms in (new.get("plan") or {}).items():
        plan[axis] = list(dict.fromkeys(plan.get(axis, []) + list(ms)))
    out["plan"] = plan
    members = {**(old.get("axis_members") or {}), **(new.get("axis_members") or {})}
    out["axis_members"] = members
    out["axes"] = {axis: stats.axis(out["tasks"], ms) for axis, ms in members.items()}
    if old.get("proxies") or new.get("proxies"):
        out["proxies"] = {**(old.get("proxies") or {}), **(new.get("proxies") or {})}
    s = dict(new.get("settings") or {})
    s["max_gen_toks"] = {**(old.get("settings") or {}).get("max_gen_toks", {}), **s.get("max_gen_toks", {})}
    out["settings"] = s
    return out


def store_eval(run_dir, base: dict, tuned: dict, cmp: dict, argv=None) -> tuple[Path, bool]:
    """Write {"base", "tuned", "compare", "created", "command"} under "eval"; returns (path, merged)."""
    base = {k: v for k, v in base.items() if k != "reference"}
    merged = False

    def change(record: dict) -> None:
        nonlocal base, tuned, cmp, merged
        old = record.get("eval")
        if old and _comparable(old.get("tuned", {}), tuned) and _comparable(old.get("base", {}), base):
            base = merge_results(old["base"], base)
            tuned = merge_results(old["tuned"], tuned)
            cmp = compare(base, tuned)
            merged = True
        record["eval"] = {"base": base, "tuned": tuned, "compare": cmp,
                          "created": utc_now(),
                          "command": list(argv) if argv else None}

    return update_record(run_dir, change), merged
