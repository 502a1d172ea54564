"""The ILP summary: what `record["ilp"]` and <run>/ilp/summary.json hold, built from the per-sample rows."""

from __future__ import annotations

import os
from pathlib import Path

from arena.ilp import causes as rules
from arena.ilp.settings import IlpSettings
from arena.ilp.stats import wilson
from arena.schema import to_dict

ILP_DIR = "ilp"
EXAMPLES_PER_CAUSE = 3
# SFT options that are mitigations of incomplete learning (arena/objectives/sft.py), and model.init_from (CPT)
MITIGATION_FIELDS = ("order", "reverse", "bucketing", "resample_every", "progressive")


def mitigation_of(cfg) -> dict | None:
    """The incomplete-learning mitigations this run trained with (None: a plain SFT run)."""
    import dataclasses

    opts = cfg.objective.options
    defaults = type(opts)()
    found = {f"objective.{f.name}": getattr(opts, f.name) for f in dataclasses.fields(opts)
             if f.name in MITIGATION_FIELDS and getattr(opts, f.name) != getattr(defaults, f.name)}
    init_from = getattr(cfg.model, "init_from", None)
    if init_from:
        found["model.init_from"] = init_from
    if not found:
        return None
    names = sorted({"cpt" if k == "model.init_from" else k.split(".")[1].replace("resample_every", "resample")
                    for k in found})
    return {"names": names, "options": found}


def summarise(rows, s: IlpSettings, asked, missing, probe, n_train, per_seed, seed_runs, cfg, control_runs,
              run_dir) -> dict:
    unl = [r for r in rows if r["unlearned"]]
    k, n = len(unl), len(rows)
    out_causes = {}
    for c in asked:
        if c in missing:
            out_causes[c] = {"k": None, "share": None, "ci95": None, "tested": False, "missing": missing[c],
                             "rule": rules.rule_text(c, s), "examples": []}
            continue
        hit = [r for r in unl if c in r["causes"]]
        out_causes[c] = {"k": len(hit), "share": round(len(hit) / k, 6) if k else None, "ci95": wilson(len(hit), k),
                         "tested": True, "missing": None, "rule": rules.rule_text(c, s),
                         "examples": [_example(r) for r in hit[:EXAMPLES_PER_CAUSE]]}
    none = [r for r in unl if not r["causes"]]
    out_causes["unexplained"] = {"k": len(none), "share": round(len(none) / k, 6) if k else None,
                                 "ci95": wilson(len(none), k), "examples": [_example(r) for r in none[:EXAMPLES_PER_CAUSE]]}
    overlaps: dict[str, int] = {}
    for r in unl:
        if len(r["causes"]) > 1:
            key = "+".join(r["causes"])
            overlaps[key] = overlaps.get(key, 0) + 1
    return {
        "version": 1, "settings": to_dict(s), "probe": probe, "n_train": n_train, "n_tested": n,
        "unlearned": {"k": k, "n": n, "fraction": round(k / n, 6) if n else None, "ci95": wilson(k, n),
                      "threshold": s.threshold, "pass_n": s.n,
                      "stable_over": [run_dir.name] + [Path(r).name for r, _ in seed_runs]},
        "per_seed": per_seed, "causes": out_causes, "overlaps": overlaps,
        "mitigation": mitigation_of(cfg),
        "controls": {k2: str(Path(ILP_DIR) / "controls" / k2) for k2 in control_runs},  # names -> folders
        "files": {"samples": f"{ILP_DIR}/samples.jsonl", "summary": f"{ILP_DIR}/summary.json"},
    }


def _example(r: dict) -> dict:
    keep = ("base_mc_pass", "tuned_mc_pass", "base_top", "tuned_top", "jsd", "conflicts", "first_seen", "last_seen",
            "reversed_pass",
            "longer_pass")
    ev = {k: r["evidence"][k] for k in keep if k in r["evidence"]}
    if r["evidence"].get("checkpoints"):
        ev["checkpoints"] = r["evidence"]["checkpoints"]
    return {"index": r["index"], "prompt": r["prompt"][:300], "reference": r["reference"][:200],
            "prediction": (r["reply"] or r["prediction"] or "")[:200], "causes": r["causes"], "evidence": ev}


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


