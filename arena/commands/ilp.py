"""`arena ilp`: which training samples a finished SFT run did not learn, and why (docs/ilp.md)."""

from __future__ import annotations

import dataclasses
import json
import sys

from arena.commands import from_flags

# IlpSettings fields with a hand-written flag; every other field (the rule thresholds) gets
# `--<field>` with its default's type, so a new threshold is a new flag without touching this file.
_SPECIAL = {"causes", "controls", "seed_runs", "samples", "max_new_tokens", "probe", "engine", "precision"}


def _csv(text: str) -> list[str]:
    return [t for t in text.replace(" ", ",").split(",") if t]


def add_parser(sub) -> None:
    from arena.ilp.settings import IlpSettings

    p = sub.add_parser("ilp", help="incomplete learning: the SFT samples a run did not learn, and their causes")
    p.add_argument("--run", required=True, metavar="DIR", help="a finished SFT run folder")
    p.add_argument("--samples", default="256", help="training samples re-tested, a seeded subset (default 256; 'all')")
    p.add_argument("--probe", default="auto", choices=["auto", "verify", "mc"],
                   help="verify: pass@N of sampled replies with the target's reward; mc: multiple choice by "
                        "log-likelihood; auto: the target's choice (arith/math verify, medical mc)")
    p.add_argument("--causes", default="auto", type=_csv, help="comma-separated causes among I,II,III,IV,V (default auto: "
                                                               "every cause whose evidence the run has)")
    p.add_argument("--controls", default="longer,reversed",
                   type=lambda t: [] if t == "none" else _csv(t),
                   help="control runs trained for causes V (longer) and IV (reversed); 'none' to skip")
    p.add_argument("--seed-runs", nargs="+", default=[], metavar="DIR",
                   help="other seeds' runs of the same config: a sample is unlearned only if unlearned in all")
    p.add_argument("--max-new-tokens", type=int, default=None, help="verify: reply cap (default: longest reference + 8)")
    p.add_argument("--engine", default="auto", help="generation engine of the verify probe (auto, native, hf, vllm)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16-autocast", "bf16"])
    for f in dataclasses.fields(IlpSettings):
        if f.name in _SPECIAL:
            continue
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                       help=f"(default {f.default})")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--reattribute", action="store_true",
                   help="re-apply the cause rules (new thresholds, other causes) to the run's stored ilp evidence; "
                        "no model is scored, no control trained")
    p.add_argument("--no-write", action="store_true", help="print only: write no ilp/ files, train no control run (reuse one already trained), leave record.json")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def _samples(text: str):
    from arena.errors import ConfigError

    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError("--samples", text, "must be a positive integer or 'all'") from None


def run(args) -> int:
    from arena.ilp.settings import IlpSettings

    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(IlpSettings) if f.name not in _SPECIAL}
    settings = from_flags(IlpSettings, "ilp", samples=_samples(args.samples), probe=args.probe, causes=args.causes,
                          controls=args.controls, seed_runs=args.seed_runs, max_new_tokens=args.max_new_tokens,
                          engine=args.engine, precision=args.precision, **values)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from arena.ilp.reattribute import reattribute
    from arena.ilp.run import ilp_run

    if args.reattribute:
        summary = from_flags(lambda **kw: reattribute(args.run, settings, **kw), "ilp", write=not args.no_write, log=log)
    else:
        summary = from_flags(lambda **kw: ilp_run(args.run, settings, **kw), "ilp", device=args.device,
                             write=not args.no_write, log=log)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(format_summary(summary))
    if not args.no_write:
        print(f"stored under 'ilp' in {args.run}/record.json; per-sample evidence in {args.run}/{summary['files']['samples']}")
    return 0


def format_summary(s: dict) -> str:
    u = s["unlearned"]
    lo, hi = u["ci95"] or (float("nan"), float("nan"))
    lines = [f"unlearned: {u['k']}/{u['n']} = {u['fraction']:.1%} (95% Wilson CI {lo:.1%}-{hi:.1%}); "
             f"probe {s['probe']}, pass@{u['pass_n']} < {u['threshold']}; {s['n_tested']} of {s['n_train']} samples tested"]
    if len(s.get("per_seed", [])) > 1:
        lines.append("per seed: " + ", ".join(f"{r['run']} {r['fraction']:.1%}" for r in s["per_seed"])
                     + " (a sample counts only if unlearned in every seed)")
    lines.append(f"{'cause':<12} {'k':>4} {'share':>7}  95% CI          rule")
    for c, v in s["causes"].items():
        if c != "unexplained" and not v.get("tested", True):
            lines.append(f"{c:<12} {'-':>4} {'-':>7}  not tested: {v['missing']}")
            continue
        share = "-" if v["share"] is None else f"{v['share']:.1%}"
        ci = "-" if not v["ci95"] else f"{v['ci95'][0]:.1%}-{v['ci95'][1]:.1%}"
        lines.append(f"{c:<12} {v['k']:>4} {share:>7}  {ci:<15} {v.get('rule', 'no rule matched')}")
    if s.get("overlaps"):
        lines.append("overlaps: " + ", ".join(f"{k} {v}" for k, v in sorted(s["overlaps"].items())))
    if s.get("mitigation"):
        lines.append("mitigation: " + ", ".join(f"{k}={v}" for k, v in s["mitigation"]["options"].items()))
    return "\n".join(lines)
