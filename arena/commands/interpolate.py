"""`arena interpolate`: the target-vs-general curve of θ(α) between the base and a tuned run."""

from __future__ import annotations

from arena.analysis.settings import (
    INTERP_PATHS,
    INTERP_SUITES,
    SCORER_NAMES,
    InterpolationSettings,
)
from arena.analysis.tables import format_curve
from arena.commands import from_flags
from arena.errors import ArenaError, suggest


def add_parser(sub) -> None:
    p = sub.add_parser("interpolate", help="score base→tuned interpolations θ(α) and mark the best trade-off α")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder (written by `arena train --out DIR`)")
    p.add_argument("--alphas", default="0,0.25,0.5,0.75,1",
                   help="comma-separated α values (0 and 1 are always added; default 0,0.25,0.5,0.75,1)")
    p.add_argument("--suite", default="general,target", help="axes to score: general, target or both (default)")
    p.add_argument("--limit", type=int, default=50,
                   help="examples per benchmark: N IFEval + N NQ-open general prompts, N held-out target examples")
    p.add_argument("--path", default="weights", choices=list(INTERP_PATHS),
                   help="weights: θ0 + α·ΔW (every method); generator: scale the OFT/BOFT Cayley generator")
    p.add_argument("--scorer", default="proxy", choices=list(SCORER_NAMES),
                   help="proxy: continuous NLL proxies (general dCE, target NLL; fast, default); "
                        "lm-eval: the evaluation suites' benchmark scores (slow on CPU)")
    p.add_argument("--delta", type=float, default=None,
                   help="rule (a) tolerance on the general score (default: 0.01 nats for the proxy, "
                        "1 SE of the base general score for lm-eval)")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16-autocast"],
                   help="scoring precision (default: the run's train.precision)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    p.add_argument("--engine", default="auto", help="generation engine of the scorer: auto (default), hf, generate, native, vllm")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--data-dir", help="benchmark data folder for the general prompts (default: the run's)")
    p.add_argument("--no-write", action="store_true", help="print only; do not store the curve in record.json")
    p.set_defaults(func=run)


def parse_alphas(text: str) -> list[float]:
    """'0,0.5' -> [0.0, 0.5]; InterpolationSettings checks them and adds 0 and 1."""
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ArenaError(f"--alphas {text!r}: expected comma-separated numbers such as 0,0.25,0.5,0.75,1") from None


def parse_suites(text: str) -> list[str]:
    """'target,general' -> ['general', 'target'] (the axes in their fixed order)."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in INTERP_SUITES]
    if bad or not items:
        raise ArenaError(f"--suite {bad[0] if bad else text!r}: allowed: {', '.join(INTERP_SUITES)}"
                         f"{suggest(bad[0], INTERP_SUITES) if bad else ''}")
    return [s for s in INTERP_SUITES if s in items]


def run(args) -> int:
    import torch

    from arena.analysis.interpolation import (
        interpolate_run,  # loads torch and transformers
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = from_flags(InterpolationSettings, "interpolation", alphas=parse_alphas(args.alphas),
                          suites=parse_suites(args.suite), limit=args.limit, path=args.path, scorer=args.scorer,
                          delta=args.delta, precision=args.precision, data_dir=args.data_dir, engine=args.engine)
    # The run itself can refuse a setting only once it knows the run (a generator path for a
    # method without a generator): from_flags rewords that field error as the flag too.
    result = from_flags(lambda **kw: interpolate_run(args.run, settings, **kw), "interpolation",
                        device=args.device, write=not args.no_write)
    print(format_curve(result))
    if not args.no_write:
        print(f"stored under 'interpolation.{args.path}' in {args.run}/record.json")
    return 0
