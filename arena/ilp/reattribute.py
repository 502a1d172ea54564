"""`arena ilp --reattribute`: the cause rules re-applied to a run's stored evidence, no model scored."""

from __future__ import annotations

import dataclasses
import json
import time

from arena.errors import ArenaError
from arena.ilp import causes as rules
from arena.ilp.settings import CAUSES, IlpSettings
from arena.ilp.summary import ILP_DIR, _atomic, summarise
from arena.schema import to_dict


# Settings that change what was measured (which samples, which trials, which models): re-applying the
# rules from stored evidence needs them unchanged. The rule thresholds may change freely, except the two
# similarities, which may only rise (only neighbours at or above the old thresholds were stored).
MEASURED = ("samples", "seed", "probe", "n", "temperature", "max_new_tokens", "options", "candidates", "controls",
            "longer_factor", "seed_runs", "engine", "precision", "batch_size")


def reattribute(run_dir, settings: IlpSettings, log=print, write: bool = True) -> dict:
    """Re-apply the cause rules (new thresholds, other causes) to a run's stored ilp evidence, without
    re-scoring any model: `arena ilp --run R --reattribute`. ArenaError before anything is written when
    the run has no ilp result, or a setting that changes what was measured differs from it."""
    from arena.runs import check_run_folder, read_run_config, set_record_key

    t0 = time.perf_counter()
    s = settings
    run_dir = check_run_folder(run_dir)
    cfg = read_run_config(run_dir)
    spath, rpath = run_dir / ILP_DIR / "summary.json", run_dir / ILP_DIR / "samples.jsonl"
    if not (spath.is_file() and rpath.is_file()):
        raise ArenaError(f"run {run_dir}: no {ILP_DIR}/summary.json and samples.jsonl to re-attribute; run arena ilp first")
    old = json.loads(spath.read_text())
    was = IlpSettings(**{k: v for k, v in old["settings"].items() if k in {f.name for f in dataclasses.fields(IlpSettings)}})
    new_d, old_d = to_dict(s), to_dict(was)
    differ = [k for k in MEASURED if new_d[k] != old_d[k]]
    if s.threshold != was.threshold and was.seed_runs:
        differ.append("threshold (with seed runs: the other seeds' passes are not stored)")
    for k in ("similarity", "iii_similarity"):
        if new_d[k] < old_d[k]:
            differ.append(f"{k} below the measured {old_d[k]}")
    if differ:
        raise ArenaError(f"ilp --reattribute: {', '.join(differ)} differ from the measured run; re-run arena ilp "
                         "without --reattribute for those")
    rows = [json.loads(x) for x in rpath.read_text().splitlines() if x.strip()]
    was_missing = {c: v["missing"] for c, v in old["causes"].items() if c != "unexplained" and not v.get("tested", True)}
    asked = list(CAUSES) if s.causes == ["auto"] else list(s.causes)
    for c in asked:
        if c in was_missing and s.causes != ["auto"]:
            raise ArenaError(f"ilp.causes: cause {c} was not measurable on this run: {was_missing[c]}")
    missing = {c: why for c, why in was_missing.items() if c in asked}
    if s.threshold != was.threshold:
        for r in rows:
            r["unlearned"] = r["pass"] < s.threshold
    for r in rows:
        ev = r["evidence"]
        ev["neighbours"] = [[j, sim] for j, sim in ev.get("neighbours", []) if sim >= s.similarity]
        ev["learned_neighbours"] = [j for j, _ in ev["neighbours"] if not rows[j]["unlearned"]][:5]
        ev["conflicts"] = [c for c in ev.get("conflicts") or [] if c["similarity"] >= s.iii_similarity]
        found, verdicts = rules.attribute(ev, s, [c for c in asked if c not in missing]) if r["unlearned"] else ([], {})
        r["causes"], r["verdicts"] = found, verdicts
    summary = summarise(rows, s, asked, missing, old["probe"], old["n_train"], old["per_seed"],
                        [(r, None) for r in was.seed_runs], cfg, old.get("controls", {}), run_dir)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    # what the measurement itself cost and was run with, kept across repeated re-attributions
    summary["reattributed_from"] = old.get("reattributed_from") or {"seconds": old.get("seconds"), "settings": old_d}
    if write:
        _atomic(rpath, "".join(json.dumps(r) + "\n" for r in rows))
        _atomic(spath, json.dumps(summary, indent=1))
        set_record_key(run_dir, "ilp", summary)
    log(f"ilp: re-attributed {summary['unlearned']['k']} unlearned samples from stored evidence")
    return summary
