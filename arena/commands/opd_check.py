"""`arena opd-check`: is this teacher a useful on-policy distillation target for this student?

On the student's own rollouts of the target's held-out prompts it measures, per completion token,
how much the teacher's and the student's top-k token sets overlap, how much of the teacher's
probability mass sits on the shared set, and the reverse KL(π_S ‖ π_T) that OPD minimises, overall
and by position in the completion. Near-zero overlap and mass share mean the student rarely visits
what the teacher would say; a reverse KL that grows with position shows compounding drift.
"""

from __future__ import annotations

import json

from arena.components import TARGETS
from arena.config import resolve_data_dir
from arena.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("opd-check", help="teacher-student agreement on student rollouts (OPD diagnostics)")
    p.add_argument("--teacher", required=True, help="teacher: arena run folder, model folder, catalog name or hub id")
    p.add_argument("--student", default="smollm2-135m-instruct", help="student: catalog name, model folder or run folder")
    p.add_argument("--target", default="math", help="target whose held-out prompts are used (default: math)")
    p.add_argument("--n-prompts", type=int, default=16)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--buckets", type=int, default=8, help="position buckets over [0, max-new-tokens)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="sampling seed and held-out selection seed")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16-autocast"])
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", help="benchmark data folder (default: ARENA_DATA_DIR or ../shared/data)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.set_defaults(func=run)


def _check_args(args) -> None:
    for name in ("n_prompts", "top_k", "max_new_tokens", "buckets"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')}", getattr(args, name), "must be a positive integer")
    if not args.temperature > 0:
        raise ConfigError("--temperature", args.temperature, "must be > 0")


def opd_check(teacher: str, student: str = "smollm2-135m-instruct", target: str = "math", n_prompts: int = 16,
              top_k: int = 8, max_new_tokens: int = 64, buckets: int = 8, temperature: float = 1.0, seed: int = 0,
              precision: str = "auto", device: str = "auto", data_dir: str | None = None) -> dict:
    """Load student and teacher (same tokenizer, else ArenaError), sample the student on `n_prompts`
    held-out prompts of `target`, and return `opd_diagnostics` plus the provenance of both models."""
    # torch and the models load only when the check runs (the CLI imports every command to list them)
    from arena.objectives.opd import opd_diagnostics
    from arena.objectives.teacher import load_student, load_teacher
    from arena.training.device import pick_device, resolve_precision

    tcls = TARGETS.get(target, field="--target")
    tgt = tcls(tcls.Options(), resolve_data_dir(data_dir))
    tgt.check_data()
    dev = pick_device(device)
    prec = resolve_precision(precision, dev)
    examples = tgt.heldout_examples(n_prompts, seed)
    s_model, s_tok, s_info = load_student(student, dev)
    t_model, _, t_info = load_teacher(teacher, dev, s_tok, student)
    out = opd_diagnostics(s_model, t_model, s_tok, [e.prompt for e in examples], top_k=top_k,
                          max_new_tokens=max_new_tokens, n_buckets=buckets, temperature=temperature, seed=seed,
                          device=dev, precision=prec)
    return {**out, "student": s_info, "teacher": t_info, "target": target, "precision": prec, "seed": seed}


def format_table(res: dict) -> str:
    k = res["top_k"]
    lines = [f"student {res['student'].get('ref')}  vs  teacher {res['teacher'].get('ref')}  "
             f"(target {res['target']}, {res['prompts']} prompts, {res['tokens']} tokens, "
             f"mean length {res['response_length']:.1f}, {res['finished']:.0%} ended with EOS)",
             f"top-{k} overlap {res['overlap']:.3f}   teacher mass on shared set {res['shared_mass']:.3f}   "
             f"teacher top-{k} mass {res['teacher_mass']:.3f}   reverse KL {res['reverse_kl']:.4f} nats/token",
             "",
             f"{'positions':>10} {'tokens':>7} {'reverse KL':>11} {'overlap':>8} {'shared mass':>12}"]
    fmt = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
    for row in res["by_position"]:
        lines.append(f"{row['positions']:>10} {row['tokens']:>7} {fmt(row['reverse_kl'], '11.4f')} "
                     f"{fmt(row['overlap'], '8.3f')} {fmt(row['shared_mass'], '12.3f')}")
    return "\n".join(lines)


def run(args) -> int:
    _check_args(args)
    res = opd_check(args.teacher, args.student, args.target, args.n_prompts, args.top_k, args.max_new_tokens,
                    args.buckets, args.temperature, args.seed, args.precision, args.device, args.data_dir)
    print(json.dumps(res, indent=2, default=str) if args.json else format_table(res))
    return 0
