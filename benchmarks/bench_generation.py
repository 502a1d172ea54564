"""Generation engines side by side in one invocation: lm-eval's tasks and plain prompts.

    python benchmarks/bench_generation.py [--limit 8] [--precision bf16-autocast] [--engines hf,native,native-plain]
                                          [--prompts 64 --max-new 128] [--skip-eval] [--skip-raw]

1. Evaluation: the arena's general and target suites (IFEval, BBH, NQ-open, GSM8K, MATH-500) on
   SmolLM2-135M-Instruct, the same seeded documents for every engine, through `run_tasks` (lm-eval's
   tasks, prompts and metrics). `hf` is lm-eval's own HFLM generate_until — what the stock `lm_eval`
   CLI runs with the HF model (benchmarks/bench_eval.py shows the two agree score for score); the
   others answer the same generate_until requests with an arena engine. Reported per engine: the
   generation seconds and tokens/s counted inside the LM, the ratio to `hf`, and per task the score,
   its difference to `hf` and the share of documents whose raw response is identical to `hf`'s.
   In bf16 the identical share is compared with `hf` against itself at another batch size (`hf-b8`):
   bf16 greedy decoding is not batch-invariant in transformers either.
2. Raw generation: `--prompts` chat prompts, greedy, `--max-new` tokens, each engine vs plain
   `model.generate` in batches of 32: new tokens/s, ratio, identical completions.

Each engine runs in this process one after another (the machine is shared: run it on a quiet
machine and read the ratios, not the absolute figures).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODEL = "smollm2-135m-instruct"


def eval_side_by_side(model, tok, engines: list[str], limit: int, precision: str) -> None:
    from arena.evaluation.api import _task_plan
    from arena.evaluation.runner import run_tasks
    from arena.evaluation.settings import RunSettings
    from arena.config import resolve_data_dir

    data_dir = resolve_data_dir(None)
    runs = {}
    for spec in engines:
        name, _, bs = spec.removesuffix("-plain").partition("-b")
        s = RunSettings(limit=limit, seed=0, batch_size=int(bs) if bs else 16, precision=precision, engine=name)
        tgt, plan, _, names, s = _task_plan(["general", "target"], "math", data_dir, None, None, s, limit, 0, None)
        t0 = time.perf_counter()
        with _plain_linear(spec.endswith("-plain")):
            runs[spec] = run_tasks(model, tok, names, data_dir, s, tgt, keep_responses=True)
        runs[spec]["wall"] = time.perf_counter() - t0
    ref = runs[engines[0]]
    print(f"\n== evaluation: general + target suites, limit {limit}, {precision}, SmolLM2-135M-Instruct ==")
    print(f"{'engine':10} {'wall s':>8} {'gen s':>8} {'new tok':>8} {'tok/s':>8} {'vs ' + engines[0]:>8}")
    g0 = ref["engine"]["generation"]["seconds"]
    for spec, r in runs.items():
        g = r["engine"]["generation"]
        split = (f"   prefill {g['prefill_seconds']:.1f} s ({g['prompt_tokens']} prompt tokens), decode {g['decode_seconds']:.1f} s "
                 f"({g['decode_steps']} steps)") if "decode_steps" in g else ""
        print(f"{spec:10} {r['wall']:8.1f} {g['seconds']:8.1f} {g['tokens']:8d} {g['tokens_per_s'] or 0:8.1f} "
              f"{g0 / g['seconds'] if g['seconds'] else float('nan'):7.2f}x{split}")
    print(f"\n{'task':10} " + " ".join(f"{s:>22}" for s in engines))
    for task in ref["tasks"]:
        cells = []
        for spec in engines:
            t = runs[spec]["tasks"][task]
            same, n = _identical(ref["responses"], runs[spec]["responses"], t["settings"]["lm_eval_tasks"])
            d = (t["score"] or 0) - (ref["tasks"][task]["score"] or 0)
            cells.append(f"{t['score']:.3f} ({d:+.3f}) {same}/{n}")
        print(f"{task:10} " + " ".join(f"{c:>22}" for c in cells))
    print("cells: score (difference to the first engine) identical responses / documents")


@contextlib.contextmanager
def _plain_linear(on: bool):
    """native-plain: the native engine without oneDNN weight prepacking (the before of that change);
    lm-eval builds its engine inside run_tasks, so the switch is the decoder's factory, for this run only."""
    from arena.generation import native

    saved = native.prepacked_linear
    if on:
        native.prepacked_linear = lambda dtype, device: (None, native.F.linear)
    try:
        yield
    finally:
        native.prepacked_linear = saved


def _identical(a: dict, b: dict, subtasks: list[str]) -> tuple[int, int]:
    same = n = 0
    for st in subtasks:
        for doc, resp in a.get(st, {}).items():
            n += 1
            same += b.get(st, {}).get(doc) == resp
    return same, n


def raw_side_by_side(model, tok, engines: list[str], n: int, max_new: int, precision: str) -> None:
    from arena.generation.engine import EngineOptions, build_engine
    from arena.generation.requests import GenRequest, Sampling
    from arena.rollouts import encode_prompts

    topics = ["a cat", "the sea", "a prime number", "autumn", "a robot", "bread", "a city at night", "a river"]
    prompts = [f"Write {('two sentences', 'a short poem', 'one line', 'a paragraph')[i % 4]} about {topics[i % 8]} (#{i})."
               for i in range(n)]
    reqs = [GenRequest(p, max_new) for p in encode_prompts(tok, prompts)]
    out = {}
    for name in ["generate", *[e for e in engines if e != "generate"]]:
        # native-plain: the native engine on plain F.linear (no oneDNN weight prepacking), the before
        base, plain = name.removesuffix("-plain"), name.endswith("-plain")
        eng = build_engine(base, model, tok, precision=precision, options=EngineOptions(max_batch=32, prepack=not plain))
        t0 = time.perf_counter()
        done = eng.generate(reqs, Sampling(), 0)
        out[name] = (time.perf_counter() - t0, done)
    t_ref, ref = out["generate"]
    print(f"\n== raw greedy generation: {n} chat prompts, <= {max_new} new tokens, {precision} ==")
    print(f"{'engine':10} {'seconds':>8} {'tok/s':>8} {'vs generate':>11} {'identical':>10}")
    for name, (t, done) in out.items():
        toks = sum(len(c.token_ids) for c in done)
        same = sum(a.token_ids == b.token_ids for a, b in zip(done, ref))
        print(f"{name:10} {t:8.1f} {toks / t:8.1f} {t_ref / t:10.2f}x {same:>5}/{len(reqs)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--precision", default="bf16-autocast", choices=["fp32", "bf16-autocast"])
    ap.add_argument("--engines", default="hf,native",
                    help="comma list; hf-b8 = hf at lm-eval batch size 8; native-plain = native without oneDNN weight prepacking")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--skip-raw", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from arena.models.loader import load_model

    torch.set_num_threads(a.threads)
    model, tok, _ = load_model(MODEL)
    model.eval()
    engines = a.engines.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, engines {engines}")
    if not a.skip_raw:
        raw_side_by_side(model, tok, [e for e in engines if "-b" not in e and e != "hf"] or ["native"], a.prompts, a.max_new, a.precision)
    if not a.skip_eval:
        eval_side_by_side(model, tok, engines, a.limit, a.precision)


if __name__ == "__main__":
    main()
