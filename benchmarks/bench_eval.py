"""`arena eval` vs the plain `lm_eval` CLI on the same model, tasks and documents; base-cache reuse.

Run as `python benchmarks/bench_eval.py [--limit 10] [--sweep 3]` (CPU, SmolLM2-135M-Instruct prepared).

1. Builds the arena's tasks once and exports them for the CLI: one YAML per lm-eval task that
   `include:`s the stock file plus the arena's overrides (local data files, generation caps), and
   the arena's seeded/stratified document indices as the CLI's `--samples` JSON. Both sides then
   run the identical requests: fp32 weights + bf16 autocast (`mixed_precision_dtype=bfloat16`),
   batch 16, chat template, few-shot as multi-turn.
2. Times both commands end to end (process start to exit, wall clock, `time.perf_counter`), each
   in a fresh process, and checks that the scores agree task by task. Overhead = arena / CLI − 1.
3. Sweep: N simulated runs (the base plus seeded weight noise) each compare against the base via
   `base_scores`; the base is evaluated by the first run only, the others read the cache.
4. Reports tokens/s of generation and of loglikelihood forwards (counted inside the arena's HFLM).

The machine is shared: other processes change wall times by a factor of several, so the two
commands run back to back, alternating order over --repeats; the best (least disturbed) and the
median time of each are reported.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODEL = "smollm2-135m-instruct"


def _run(cmd: list[str], env: dict, log: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}), see {log}:\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def _cli_scores(out_dir: Path) -> dict:
    files = sorted(glob.glob(str(out_dir / "**" / "results_*.json"), recursive=True))
    res = json.loads(Path(files[-1]).read_text())["results"]
    return res


def _arena_scores(result: dict) -> dict[str, tuple[str, float]]:
    """{lm-eval task: (metric,filter, score)} from an arena result."""
    out = {}
    for name, t in result["tasks"].items():
        f = t["settings"]["filter"]
        if "subtasks" in t:
            for sub, s in t["subtasks"].items():
                out[sub] = (f"{t['metric']},{f}", s["score"])
        else:
            out[t["settings"]["lm_eval_tasks"][0]] = (f"{t['metric']},{f}", t["score"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=10, help="documents per benchmark (BBH: over its 27 subtasks)")
    ap.add_argument("--tasks", default="ifeval,bbh,nq_open,pubmedqa")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1, help="arena/CLI pairs, alternating order")
    ap.add_argument("--sweep", type=int, default=3, help="simulated runs sharing one base evaluation")
    ap.add_argument("--sweep-task", default="pubmedqa")
    ap.add_argument("--sweep-limit", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP/torch threads for both sides (default 1: on the shared 2-core CPU, 2 threads next to "
                         "another job generate ~5x slower)")
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--workdir", help="keep files here (default: a temporary folder, removed)")
    args = ap.parse_args()

    from arena.config import resolve_data_dir
    from arena.models import catalog

    if not catalog.is_prepared(MODEL):
        raise SystemExit(f"{MODEL} is not prepared: run `arena models prepare {MODEL}` first")
    model_dir = catalog.model_dir(MODEL)
    data_dir = resolve_data_dir(None)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    # A fresh cache (empty base cache) that borrows the prepared model read-only.
    cache = work / "cache"
    (cache / "models").mkdir(parents=True, exist_ok=True)
    link = cache / "models" / MODEL
    if not link.exists():
        link.symlink_to(model_dir, target_is_directory=True)
    env = {**os.environ, "ARENA_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(args.threads),
           # the plain CLI needs punkt_tab too: without it IFEval dies late on a sentence-counting prompt
           "NLTK_DATA": str(Path(data_dir) / "nltk_data")}
    os.environ.update({k: env[k] for k in ("ARENA_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")})

    from arena.evaluation.build import export_yaml
    from arena.evaluation.runner import plan
    from arena.evaluation.settings import RunSettings
    from arena.evaluation.suites import resolve_tasks

    names = args.tasks.split(",")
    resolve_tasks(["general", "medical"], None, names)  # validates the names
    settings = RunSettings(limit=args.limit, seed=0, batch_size=args.batch_size)
    p = plan(names, data_dir, settings)
    subtasks = [st for sts in p["subtasks"].values() for st in sts]
    export_yaml(subtasks, work / "tasks")
    samples = {k: v for k, v in p["samples"].items()}
    lm_tasks = [st.name for st in subtasks]
    n_docs = sum(len(v) for v in samples.values())
    print(f"tasks: {', '.join(names)} ({len(lm_tasks)} lm-eval tasks), limit {args.limit} -> {n_docs} documents, "
          f"batch {args.batch_size}, bf16 autocast, chat template, {args.threads} thread(s); work dir {work}")

    arena_cmd = ["arena", "eval", "--model", MODEL, "--suite", "general,medical", "--tasks", args.tasks,
                 "--limit", str(args.limit), "--batch-size", str(args.batch_size), "--data-dir", str(data_dir),
                 "--no-proxies", "--no-cache", "--json", "--no-progress"]
    cli_cmd = ["lm_eval", "run", "--model", "hf", "--model_args",
               f"pretrained={model_dir},dtype=float32,mixed_precision_dtype=bfloat16",
               "--tasks", *lm_tasks, "--include_path", str(work / "tasks"), "--samples", json.dumps(samples),
               "--batch_size", str(args.batch_size), "--device", "cpu", "--apply_chat_template",
               "--fewshot_as_multiturn", "true", "--output_path", str(work / "lm_eval_out"), "--log_samples"]
    walls: dict[str, list[float]] = {"arena": [], "lm_eval": []}
    arena_result = None
    for rep in range(args.repeats):
        order = ["arena", "lm_eval"] if rep % 2 == 0 else ["lm_eval", "arena"]
        for who in order:
            if who == "lm_eval" and args.skip_cli:
                continue
            if who == "arena":
                wall, out = _run(arena_cmd, env, work / f"arena-{rep}.log")
                arena_result = json.loads(out)
            else:
                shutil.rmtree(work / "lm_eval_out", ignore_errors=True)
                wall, _ = _run(cli_cmd, env, work / f"lm_eval-{rep}.log")
            walls[who].append(wall)
            print(f"  {who:<8} run {rep + 1}: {wall:7.1f} s wall")

    eng = arena_result["engine"]
    a_scores = _arena_scores(arena_result)
    print("\nper-benchmark scores (arena)")
    for name, t in arena_result["tasks"].items():
        print(f"  {name:<16} {t['metric']:<24} {t['score']:.3f} ± {t['se']:.3f}  n={t['n']}")
    print(f"\narena engine: eval {eng['eval_s']} s (+ plan {eng['plan_s']} s)")
    g, ll = eng["generation"], eng["loglikelihood"]
    print(f"  generation:    {g['tokens']} new tokens + {g['prompt_tokens']} prompt tokens in {g['seconds']} s "
          f"= {g['tokens_per_s']} new tok/s ({g['all_tokens_per_s']} tok/s with prefill)")
    print(f"  loglikelihood: {ll['tokens']} tokens (incl. batch padding) in {ll['seconds']} s = {ll['tokens_per_s']} tok/s")
    a_med = statistics.median(walls["arena"])
    if not args.skip_cli:
        c_med = statistics.median(walls["lm_eval"])
        cli = _cli_scores(work / "lm_eval_out")
        diffs = []
        for task, (key, score) in a_scores.items():
            other = cli.get(task, {}).get(key)
            if other is None:
                print(f"  note: {task} {key} missing from the lm_eval results")
                continue
            diffs.append(abs(float(other) - score))
        a_min, c_min = min(walls["arena"]), min(walls["lm_eval"])
        print(f"\nwall clock over {args.repeats} pair(s): arena eval min {a_min:.1f} s / median {a_med:.1f} s, "
              f"lm_eval CLI min {c_min:.1f} s / median {c_med:.1f} s")
        print(f"arena overhead: {100 * (a_min / c_min - 1):+.1f}% (best of each), "
              f"{100 * (a_med / c_med - 1):+.1f}% (medians); limit +10%")
        print(f"scores agree on {len(diffs)} lm-eval tasks: max |arena − lm_eval| = {max(diffs):.4f}")

    # ---- sweep: N runs, one base evaluation
    if args.sweep > 0:
        _sweep(args, cache, data_dir)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _sweep(args, cache: Path, data_dir: str) -> None:
    import copy

    import torch

    from arena.evaluation import base_scores, compare, evaluate_model
    from arena.evaluation.settings import RunSettings
    from arena.models.loader import load_model

    torch.set_num_threads(args.threads)
    print(f"\nsweep of {args.sweep} runs ({args.sweep_task}, limit {args.sweep_limit}); base cache in {cache}")
    base_model, tok, _ = load_model(MODEL)
    sweep_settings = RunSettings(batch_size=args.batch_size)
    for i in range(args.sweep):
        t0 = time.perf_counter()
        base = base_scores(MODEL, ["general", "medical"], tasks=[args.sweep_task], limit=args.sweep_limit, data_dir=data_dir,
                           settings=sweep_settings, proxies=False)
        t_base = time.perf_counter() - t0
        tuned = copy.deepcopy(base_model)
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for prm in tuned.parameters():
                prm.add_(torch.randn(prm.shape, generator=gen) * 0.01 * prm.std())
        t1 = time.perf_counter()
        res = evaluate_model(tuned, tok, ["general", "medical"], tasks=[args.sweep_task], limit=args.sweep_limit,
                             data_dir=data_dir, settings=sweep_settings, proxies=False)
        t_tuned = time.perf_counter() - t1
        d = compare(base, res)["benchmarks"][args.sweep_task]
        c = base["cache"]
        print(f"  run {i + 1}: base {'HIT ' if not c['misses'] else 'MISS'} ({len(c['hits'])} hit, {len(c['misses'])} miss) "
              f"{t_base:6.1f} s | tuned eval {t_tuned:6.1f} s | Δ {d['delta']:+.3f} ± {d['se']:.3f}")
        del tuned


if __name__ == "__main__":
    sys.exit(main())
