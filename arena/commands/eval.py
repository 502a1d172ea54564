"""`arena eval`: score a base model or a finished run on the general and target suites.

    arena eval --model smollm2-135m-instruct --suite general --limit 50
    arena eval --run results/try/lora --suite general,target --limit 50
    arena eval --run results/try/lora --suite general --tasks ifeval,nq_open

A base model's scores come from (and go to) the base cache; a run is compared with its base, and
the result is stored under "eval" in the run's record.json (atomic write, other keys kept).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from arena.commands import from_flags
from arena.config import resolve_data_dir
from arena.errors import ArenaError, ConfigError
from arena.evaluation.api import base_scores, strip_units
from arena.evaluation.format import format_comparison, format_result
from arena.evaluation.run import evaluate_run
from arena.evaluation.settings import EvalSettings
from arena.evaluation.tasks import TASKS, get_task


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="score a model or a run on the general/target suites (lm-eval)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="base model: catalog name (smollm2-135m-instruct, tiny), local folder or hub id")
    src.add_argument("--run", help="a finished run folder (config.yaml + final/): compared with its base model")
    p.add_argument("--suite", default="general",
                   help="comma list of: general, target, or a target name (math, medical, arith); default general")
    p.add_argument("--tasks", help="comma list keeping a subset of benchmarks (e.g. ifeval,nq_open); "
                                   "names outside the suites are added (e.g. medmcqa)")
    p.add_argument("--target", help="target for --suite target with --model (default for --run: the run's target)")
    p.add_argument("--limit", action="append", default=[], metavar="[TASK=]N",
                   help="documents per benchmark: a seeded, label-stratified subset (BBH: split over its 27 "
                        "subtasks), for every benchmark (N) or one (ifeval=100); repeatable; default: all")
    p.add_argument("--seed", type=int, default=0, help="subset seed (default 0)")
    p.add_argument("--data-dir", help="benchmark data folder (default: ARENA_DATA_DIR or ../shared/data); "
                                      "without one, stock hub datasets are used when the hub is reachable")
    p.add_argument("--batch-size", type=int, default=16, help="lm-eval batch size (default 16)")
    p.add_argument("--max-gen-toks", action="append", default=[], metavar="[TASK=]N",
                   help="generation cap, for every generation task (N) or one (ifeval=512); repeatable. "
                        "Defaults: ifeval 256, bbh 64, nq_open 32, gsm8k 256, math500 256, arith 32")
    p.add_argument("--bbh-variant", default="fewshot", help="fewshot (default), zeroshot, cot_fewshot, cot_zeroshot")
    p.add_argument("--bbh-shots", type=int, help="BBH exemplars 0..3 (default: the variant's, 3 for fewshot)")
    p.add_argument("--chat-template", choices=["auto", "on", "off"], default="auto",
                   help="apply the tokenizer's chat template (auto: when it has one)")
    p.add_argument("--precision", default="auto", help="auto (bf16 autocast on CPU/GPU), fp32, bf16-autocast")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--engine", default="auto",
                   help="generation engine: auto (vllm on CUDA if installed, native on CPU), hf (lm-eval's own HF "
                        "generate, the reference), generate, native, vllm")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default). On a shared 2-core CPU with another job running, "
                        "1 thread generated 5x faster than 2")
    p.add_argument("--no-proxies", action="store_true", help="skip the continuous NLL proxies")
    p.add_argument("--proxy-prompts", type=int, default=96,
                   help="general prompts for the NLL proxy, half IFEval half NQ-open (default 96)")
    p.add_argument("--proxy-tokens", type=int, default=96, help="cap of the base's reference responses (default 96)")
    p.add_argument("--no-cache", action="store_true", help="recompute the base model's scores (and do not store them)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    p.add_argument("--out", help="also write the full result JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="hide lm-eval's progress bars")
    p.add_argument("--verbose", action="store_true", help="show lm-eval's log")
    p.set_defaults(func=run)


def _task_values(items: list[str], flag: str) -> list[tuple[str, int]]:
    """Repeatable `[TASK=]N` flag values -> [(task or "", N)], the task checked against the registry."""
    out = []
    for item in items:
        name, _, value = item.rpartition("=")
        try:
            n = int(value)
        except ValueError:
            raise ConfigError(flag, item, "expected N or TASK=N with N a positive integer") from None
        if name:
            try:
                get_task(name)
            except ConfigError as e:  # name the flag the user typed, not get_task's default field
                raise ConfigError(flag, item, e.allowed) from None
        out.append((name, n))
    return out


def _gen_caps(items: list[str]) -> dict:
    caps: dict = {}
    for name, n in _task_values(items, "--max-gen-toks"):
        if name:
            caps[name] = n
        else:
            caps.update({t: n for t in TASKS if get_task(t).generate})
    return caps


def _limits(items: list[str]):
    """--limit N / --limit TASK=N (repeatable) -> None, N, or {TASK: N, "default": N}."""
    out = {name or "default": n for name, n in _task_values(items, "--limit")}
    if not out:
        return None
    return out["default"] if list(out) == ["default"] else out


def settings_from_args(args):
    """The EvalSettings that the flags say (the same object a sweep's `eval:` section builds)."""
    if not args.no_proxies and (args.proxy_prompts <= 0 or args.proxy_tokens <= 0):
        raise ConfigError("--proxy-prompts/--proxy-tokens", (args.proxy_prompts, args.proxy_tokens),
                          "must be positive (use --no-proxies to skip the proxies)")
    half = args.proxy_prompts // 2
    return from_flags(EvalSettings, "eval", suites=_csv(args.suite), tasks=_csv(args.tasks) or None, limit=_limits(args.limit), seed=args.seed,
                        batch_size=args.batch_size, max_gen_toks=_gen_caps(args.max_gen_toks),
                        bbh_variant=args.bbh_variant, bbh_shots=args.bbh_shots, chat_template=args.chat_template,
                        precision=args.precision, engine=args.engine, proxies=not args.no_proxies,
                        proxy={"n_ifeval": half, "n_nq": args.proxy_prompts - half, "max_new_tokens": args.proxy_tokens},
                        data_dir=args.data_dir, use_cache=not args.no_cache)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def _device(name: str):
    from arena.training.device import pick_device  # imports torch

    return pick_device(name)


# The evaluation API's fields and the flags that set them: its errors are reworded as the flag.
FLAG_OF = {"suites": "--suite", "tasks": "--tasks", "target": "--target", "eval.engine": "--engine"}


def run(args) -> int:
    try:
        return _run(args)
    except ConfigError as e:
        if e.field not in FLAG_OF:
            raise
        raise ConfigError(FLAG_OF[e.field], e.value, e.allowed) from None


def _run(args) -> int:
    if args.threads < 0:
        raise ConfigError("--threads", args.threads, "must be >= 0 (0: torch's default)")
    settings = settings_from_args(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    device = _device(args.device)
    if args.run:
        return _run_eval(args, settings, device)
    common = dict(suites=settings.suites, limit=settings.limit, seed=settings.seed, device=device, tasks=settings.tasks,
                  settings=settings.run_settings(), proxies=settings.proxy_settings(), log=_log, verbose=args.verbose,
                  progress=not args.no_progress)
    data_dir = resolve_data_dir(args.data_dir)
    result = base_scores(args.model, target=args.target, data_dir=data_dir, cache=settings.use_cache, **common)
    if args.out:
        full = {k: v for k, v in result.items() if k != "reference"}
        Path(args.out).write_text(json.dumps(full, indent=2, default=str))
    if args.json:
        print(json.dumps(strip_units(result), indent=2, default=str))
    else:
        c = result["cache"]
        print(format_result(result, title=f"model {args.model}" + (f", target {result['target']}" if result["target"] else "")
                            + f" — base cache: {len(c['hits'])} hit(s), {len(c['misses'])} miss(es)"))
    return 0


def _run_eval(args, settings, device) -> int:
    run_dir = Path(args.run)
    if args.target:
        raise ArenaError("--target applies to --model; a run is scored on its own target")
    _log(f"rebuilding the model of {run_dir}")
    out = evaluate_run(run_dir, settings, device=device, log=_log, verbose=args.verbose, progress=not args.no_progress,
                       argv=sys.argv[1:])
    base, tuned, cmp, cfg = out["base"], out["tuned"], out["compare"], out["config"]
    if args.out:
        Path(args.out).write_text(json.dumps({"base": strip_units(base), "tuned": tuned, "compare": cmp}, indent=2, default=str))
    if args.json:
        print(json.dumps({"base": strip_units(base), "tuned": strip_units(tuned), "compare": cmp}, indent=2, default=str))
        return 0
    c = base["cache"]
    print(format_result(base, title=f"base {cfg.model.name} — base cache: {len(c['hits'])} hit(s), {len(c['misses'])} miss(es)"))
    print()
    print(format_result(tuned, title=f"tuned {run_dir} ({cfg.method.name}, target {cfg.target.name})"))
    print()
    print(format_comparison(cmp))
    print(f"\nstored under 'eval' in {out['path']}" + (" (merged with the earlier evaluation)" if out["merged"] else ""))
    return 0
