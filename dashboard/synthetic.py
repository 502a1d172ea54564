"""Synthetic run records in the schema `run_training` + `arena eval` + `arena analyze` +
`arena interpolate` + the sweep runner write, for tests and demos of the dashboard and reports.

    python -m dashboard.synthetic results/demo --seeds 0 1 2 && arena dashboard --results results/demo
    python -m dashboard.synthetic results/demo --ilp     # + incomplete-learning sections and a mitigation

The default method profiles follow a CPU pilot (plasticity / general ΔCE of SmolLM2-135M after 40
steps of SFT on GSM8K); accuracies and diagnostics are made up but consistent with them. Seeded
noise makes seeds differ. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Optional

# label -> (method, plasticity nats, general ΔCE nats, target-acc gain, forgetting acc, trainable params, train s)
PILOT = {
    "full": ("full", 0.599, 0.091, 0.060, 0.030, 134_515_008, 103.0),
    "lora": ("lora", 0.525, 0.103, 0.050, 0.035, 2_442_240, 67.0),
    "pissa": ("pissa", 0.644, 0.242, 0.065, 0.090, 2_442_240, 78.0),
    "oft": ("oft", 0.655, 0.247, 0.066, 0.092, 1_622_016, 92.0),
    "vera": ("vera", 0.209, 0.013, 0.020, 0.004, 282_624, 115.0),
}
MODULES = ["model.layers.10.self_attn.q_proj", "model.layers.10.mlp.down_proj", "model.layers.20.self_attn.v_proj"]
BENCH = {"general": ["ifeval", "bbh", "nq_open"], "target": ["gsm8k", "math500"]}


def _interp_points(p: float, f: float, alphas, rng: random.Random, g0: float = 2.0, t0: float = 1.5) -> list:
    pts = []
    for a in alphas:
        gain = p * (1 - (1 - a) ** 2)  # learns early along the path
        forg = f * a ** 2  # forgets late
        if a not in (0.0,):
            gain += rng.gauss(0, 0.003)
            forg += rng.gauss(0, 0.002)
        pts.append({"alpha": float(a), "path": "weights", "seconds": 1.0,
                    "general": {"value": g0 + forg, "se": 0.03, "n": 32, "tokens": 3000, "delta": forg,
                                "delta_se": 0.0 if a == 0 else 0.004 + 0.01 * a},
                    "target": {"value": t0 - gain, "se": 0.04, "n": 16, "tokens": 900, "delta": -gain,
                               "delta_se": 0.0 if a == 0 else 0.005 + 0.01 * a}})
    return pts


def make_record(label: str, seed: int = 0, *, sweep: str = "synthetic", model: str = "smollm2-135m-instruct",
                target: str = "math", objective: str = "sft", profile: Optional[tuple] = None,
                base_general: float = 0.30, base_target: float = 0.10, interpolation: bool = True,
                noise: float = 1.0) -> dict:
    method, p, f, tg, fg, params, secs = profile or PILOT[label]
    rng = random.Random(f"{label}/{seed}/{target}/{objective}")
    p_, f_ = p + noise * rng.gauss(0, 0.01), f + noise * rng.gauss(0, 0.005)
    tg_, fg_ = tg + noise * rng.gauss(0, 0.01), fg + noise * rng.gauss(0, 0.008)
    h = hashlib.sha256(f"{label}/{seed}/{target}/{objective}/{model}".encode()).hexdigest()[:8]
    run_id = f"{label}-{target}-{objective}-s{seed}-{h}"
    benches = {}
    for axis, names in BENCH.items():
        base = base_general if axis == "general" else base_target
        delta = -fg_ if axis == "general" else tg_
        for i, n in enumerate(names):
            d = delta + rng.gauss(0, 0.005)
            benches[n] = {"base": base + 0.01 * i, "base_se": 0.02, "tuned": base + 0.01 * i + d, "tuned_se": 0.02,
                          "delta": d, "se": 0.015, "paired": True, "n": 50}
    axes = {}
    for axis, names in BENCH.items():
        b = sum(benches[n]["base"] for n in names) / len(names)
        t = sum(benches[n]["tuned"] for n in names) / len(names)
        axes[axis] = {"base": b, "tuned": t, "delta": t - b, "se": 0.015 / math.sqrt(len(names)), "benchmarks": names,
                      "complete": True}
    compare = {"benchmarks": benches, "axes": axes,
               "proxies": {"general_nll": {"base": 2.0, "tuned": 2.0 + f_, "delta": f_, "se": 0.006, "n": 64},
                           "target_nll": {"base": 1.5, "tuned": 1.5 - p_, "delta": -p_, "se": 0.008, "n": 48}},
               "target_gain": {"value": axes["target"]["delta"], "se": axes["target"]["se"]},
               "forgetting": {"value": -axes["general"]["delta"], "se": axes["general"]["se"]}}
    modules = {}
    for i, m in enumerate(MODULES):
        s = f_ * (1 + 0.1 * i)
        modules[m] = {"shape": [576, 576],
                      "csd": {"general": {"abs": s * 1e-3, "rel": s * 1e-2, "un": s * 0.5},
                              "target": {"abs": p_ * 1e-3, "rel": p_ * 1e-2, "un": p_ * 0.5},
                              "ratio": {"abs": s / p_, "rel": s / p_, "un": s / p_}},
                      "geometry": {d: {"procrustes": 0.05 + 0.3 * s, "procrustes_raw": 0.06 + 0.35 * s,
                                       "gram": 0.02 + 0.2 * s, "cka": 1 - 0.12 * s} for d in ("general", "target")},
                      "spectral": {"frobenius_norm": 0.5 + s, "effective_rank": 8.0, "principal_fraction": 0.1,
                                   "top_sv_rel_change": 0.01 * s}}
    summary = {}
    for key, path in (("csd_rel_general", ("csd", "general", "rel")), ("csd_un_general", ("csd", "general", "un")),
                      ("procrustes_general", ("geometry", "general", "procrustes")),
                      ("gram_general", ("geometry", "general", "gram")), ("cka_general", ("geometry", "general", "cka")),
                      ("dw_frobenius", ("spectral", "frobenius_norm"))):
        vals = []
        for m in modules.values():
            v = m
            for k in path:
                v = v[k]
            vals.append(v)
        summary[key] = sum(vals) / len(vals)
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    rec = {
        "schema_version": 1, "run_id": run_id, "status": "done", "created": "2026-01-01T00:00:00+00:00",
        "config": {"model": {"name": model, "revision": None, "trust_remote_code": False},
                   "method": {"name": method}, "target": {"name": target}, "objective": {"name": objective},
                   "train": {"steps": 40, "batch_size": 4, "seq_len": 256, "lr": 2e-4, "seed": seed},
                   "probe": {"heldout": 32}, "data_dir": None, "out": None},
        "model": {"name": model, "source": "synthetic"},
        "method": {"name": method, "trainable_params": params, "total_params": 134_515_008,
                   "trainable_fraction": params / 134_515_008, "lr": 2e-4, "additive": method != "oft"},
        "objective": objective, "target": target, "device": "cpu", "precision": "bf16-autocast",
        "train": {"steps": 40, "resumed_from": 0, "tokens": 40_960, "loss_tokens": 20_000, "seconds": secs,
                  "tokens_per_second": 40_960 / secs, "first_loss": 1.3, "last_loss": 1.3 - p_, "peak_memory_mb": 1500.0},
        "probes": {"base": {"target_nll": {"nll": 1.5, "se": 0.04, "n": 32}},
                   "tuned": {"target_nll": {"nll": 1.5 - p_, "se": 0.04, "n": 32}}},
        "timings": {"load_s": 2.0, "train_s": secs, "probe_s": 5.0, "total_s": secs + 7},
        "finished": "2026-01-01T00:10:00+00:00",
        "eval": {"base": {"axes": {a: {"score": v["base"]} for a, v in axes.items()}},
                 "tuned": {"plan": BENCH, "axes": {a: {"score": v["tuned"]} for a, v in axes.items()},
                           "settings": {"limit": 50}},
                 "compare": compare, "created": "2026-01-01T00:20:00+00:00"},
        "diagnostics": {"modules": modules, "summary": summary, "method": method},
        "sweep": {"name": sweep, "run_id": run_id, "label": label, "seed": seed, "status": "complete",
                  "stages": {s: {"status": "done", "fingerprint": "x", "seconds": 10.0}
                             for s in ("eval", "diagnostics", "interpolation")}},
    }
    if interpolation:
        rec["interpolation"] = {"weights": {
            "path": "weights", "method": method, "alphas": alphas, "suites": ["general", "target"], "limit": 16,
            "scorer": {"name": "proxy", "orientation": "nll"}, "points": _interp_points(p_, f_, alphas, rng), "best": {}}}
    return rec


# ILP: unlearned rate of a plain SFT run per label (synthetic; less plastic methods leave more unlearned)
ILP_RATE = {"full": 0.10, "lora": 0.16, "pissa": 0.12, "oft": 0.11, "vera": 0.30}
ILP_RULES = {"I": "base MC pass@N <= 0.2 and no similar training sample learned",
             "II": "base confidently wrong (p >= 0.5) and JSD(base, tuned) <= 0.3 bits",
             "III": "a near-duplicate training prompt (TF-IDF cosine >= 0.9) has another answer",
             "IV": "seen early, learned at an earlier checkpoint, unlearned at the end",
             "V": "reference NLL still falling (>= 5%) between the last two checkpoints"}


def _u(*parts) -> float:
    """A deterministic uniform in [0, 1) from its parts (the same sample draws the same in every run)."""
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:12], 16) / 16 ** 12


def make_ilp(label: str, seed: int, n: int = 64, rate: Optional[float] = None,
             mitigation: Optional[str] = None, learn: float = 0.5) -> tuple[dict, list[dict]]:
    """(record["ilp"], the lines of ilp/samples.jsonl) for a synthetic run, in arena.ilp.run's schema.

    The n tested samples are the same for every run (keys `sample-i`); sample i is unlearned when
    u(label, seed, i) < rate; a mitigation run relearns each of those with probability `learn`,
    so its effect against the baseline of the same label and seed is about −learn·rate. Causes:
    I, II, III and V drawn per sample (a sample may have several: the overlaps); IV not tested.
    """
    rate = ILP_RATE.get(label, 0.15) if rate is None else rate
    rows = []
    for i in range(n):
        key = hashlib.sha1(f"sample-{i}".encode()).hexdigest()
        unl = _u(label, seed, i) < rate and not (mitigation and _u(label, seed, i, "mit") < learn)
        causes = [c for c, p in (("I", 0.35), ("II", 0.25), ("III", 0.1), ("V", 0.3)) if unl and _u(c, seed, i) < p]
        rows.append({"index": i, "key": key, "source": "synthetic", "prompt": f"What is {i} + {2 * i + 7}?",
                     "reference": str(3 * i + 7), "pass": 0.0 if unl else 1.0, "greedy": not unl,
                     "mc_pass": 0.2 if unl else 0.9, "base_mc_pass": 0.1, "unlearned": unl, "causes": causes,
                     "evidence": {}})
    unl = [r for r in rows if r["unlearned"]]
    k = len(unl)

    def wilson(a: int, b: int):
        if not b:
            return None
        z, p_ = 1.959964, a / b
        c, h = (p_ + z * z / (2 * b)) / (1 + z * z / b), z * math.sqrt(p_ * (1 - p_) / b + z * z / (4 * b * b)) / (1 + z * z / b)
        return [round(max(0.0, c - h), 6), round(min(1.0, c + h), 6)]

    def ex(r):
        return {"index": r["index"], "prompt": r["prompt"], "reference": r["reference"],
                "prediction": str(int(r["reference"]) + 1), "causes": r["causes"], "evidence": {}}

    causes = {}
    for c in ("I", "II", "III", "IV", "V"):
        if c == "IV":
            causes[c] = {"k": None, "share": None, "ci95": None, "tested": False, "rule": ILP_RULES[c], "examples": [],
                         "missing": "the run kept no checkpoint from its first half (train.save_every)"}
            continue
        hit = [r for r in unl if c in r["causes"]]
        causes[c] = {"k": len(hit), "share": len(hit) / k if k else None, "ci95": wilson(len(hit), k), "tested": True,
                     "missing": None, "rule": ILP_RULES[c], "examples": [ex(r) for r in hit[:3]]}
    none = [r for r in unl if not r["causes"]]
    causes["unexplained"] = {"k": len(none), "share": len(none) / k if k else None, "ci95": wilson(len(none), k),
                             "examples": [ex(r) for r in none[:3]]}
    overlaps: dict = {}
    for r in unl:
        if len(r["causes"]) > 1:
            overlaps["+".join(r["causes"])] = overlaps.get("+".join(r["causes"]), 0) + 1
    ilp = {"version": 1, "settings": {"samples": n, "seed": 0, "n": 5, "threshold": 0.2}, "probe": "verify",
           "n_train": 2000, "n_tested": n, "seconds": 12.0,
           "unlearned": {"k": k, "n": n, "fraction": k / n, "ci95": wilson(k, n), "threshold": 0.2, "pass_n": 5,
                         "stable_over": [label]},
           "per_seed": [{"run": label, "k": k, "n": n}], "causes": causes, "overlaps": overlaps,
           "mitigation": {"names": [mitigation], "options": {f"objective.{mitigation}": "conflicts"}} if mitigation else None,
           "controls": {}, "files": {"samples": "ilp/samples.jsonl", "summary": "ilp/summary.json"}}
    return ilp, rows


def add_ilp(rec: dict, mitigation: Optional[str] = None, **kw) -> list[dict]:
    """Give a synthetic record an ilp section (a mitigation run: its own label and run id, the same
    method config); returns the samples for `write_run(..., samples=...)`."""
    label, seed = rec["sweep"]["label"], rec["sweep"]["seed"]
    rec["ilp"], rows = make_ilp(label, seed, mitigation=mitigation, **kw)
    if mitigation:
        lab = f"{label}-{mitigation}"
        rec["run_id"] = rec["run_id"].replace(f"{label}-", f"{lab}-", 1)
        rec["sweep"].update(label=lab, run_id=rec["run_id"])
        rec["config"]["objective"] = {"name": "sft", mitigation: "conflicts"}
        rec["sweep"]["stages"]["ilp"] = {"status": "done", "fingerprint": "x", "seconds": 12.0}
        cmp = rec["eval"]["compare"]  # the mitigation costs a little more forgetting (synthetic)
        cmp["forgetting"]["value"] += 0.004
        cmp["proxies"]["general_nll"]["delta"] += 0.01
        cmp["proxies"]["general_nll"]["tuned"] += 0.01
    return rows


def write_run(root: Path, rec: dict, log_steps: int = 10, samples: Optional[list] = None) -> Path:
    d = Path(root) / rec["run_id"]
    d.mkdir(parents=True, exist_ok=True)
    (d / "record.json").write_text(json.dumps(rec, indent=1))
    if samples is not None:
        (d / "ilp").mkdir(exist_ok=True)
        (d / "ilp" / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    last = rec.get("train", {}).get("last_loss", 1.0)
    lines = [json.dumps({"step": i + 1, "loss": 1.3 + (last - 1.3) * (i + 1) / log_steps, "lr": 2e-4})
             for i in range(log_steps)]
    (d / "train_log.jsonl").write_text("\n".join(lines) + "\n")
    return d


def write_sweep(root, labels=("full", "lora", "pissa", "vera", "oft"), seeds=(0,), failed: bool = False,
                corrupt: bool = False, ilp: bool = False, mitigations: tuple = ("bucketing",),
                mitigated: tuple = ("lora",), **kw) -> Path:
    """A sweep folder of synthetic records; optionally one failed run and one corrupt record.json.

    ilp=True: every run gets an ilp section and ilp/samples.jsonl, and each label in `mitigated`
    gets one run per mitigation and seed (label `<label>-<mitigation>`, same method config)."""
    root = Path(root)
    for seed in seeds:
        for lab in labels:
            rec = make_record(lab, seed, **kw)
            write_run(root, rec, samples=add_ilp(rec) if ilp else None)
            for mit in (mitigations if ilp and lab in mitigated else ()):
                rec = make_record(lab, seed, **kw)
                write_run(root, rec, samples=add_ilp(rec, mitigation=mit))
    if failed:
        d = root / "dora-math-sft-s0-deadbeef"
        d.mkdir(parents=True, exist_ok=True)
        (d / "record.json").write_text(json.dumps({
            "schema_version": 1, "run_id": d.name, "status": "failed", "error": "TrainingFailed: loss is NaN at step 3",
            "traceback": "Traceback ...\nTrainingFailed: loss is NaN at step 3",
            "config": {"model": {"name": kw.get("model", "smollm2-135m-instruct")}, "method": {"name": "dora"},
                       "target": {"name": kw.get("target", "math")}, "objective": {"name": "sft"}, "train": {"seed": 0}},
            "method": {"name": "dora"}, "target": kw.get("target", "math"), "objective": "sft"}))
    if corrupt:
        d = root / "boft-math-sft-s0-0badc0de"
        d.mkdir(parents=True, exist_ok=True)
        (d / "record.json").write_text('{"schema_version": 1, "run_id": "boft-math-sft-s0-0badc0de", "status": "do')
    return root


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m dashboard.synthetic", description="write a synthetic sweep folder")
    p.add_argument("out")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--failed", action="store_true")
    p.add_argument("--corrupt", action="store_true")
    p.add_argument("--ilp", action="store_true", help="add incomplete-learning sections and a bucketing mitigation of lora")
    a = p.parse_args(argv)
    write_sweep(a.out, seeds=a.seeds, failed=a.failed, corrupt=a.corrupt, ilp=a.ilp)
    print(f"synthetic sweep written to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
