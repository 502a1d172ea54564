"""Synchronous vs asynchronous rollouts, and what a teacher service ships (issue 16).

Side by side in one invocation, on the real model (SmolLM2-135M-Instruct, `arena models prepare`),
LoRA r8, bf16 autocast, the arith target, the same seed for every configuration:

  GRPO   sync          inline sampling, trainer on every core (`--threads`, default 2)
         worker k=0    rollout worker process, staleness 0 (the synchronous schedule; overhead check)
         worker k=1,2  rollout worker with max_staleness 1 and 2: sampling step s+k overlaps training s
  OPD    the same four, the teacher in a service process (transport logits); the teacher is a
         short SFT run of the same model on arith (trained first, or `--teacher RUN_FOLDER`)

Async configurations put the trainer on core 0 (1 thread) and the worker on core 1 (1 thread).
Reported per configuration: steady-state steps/s (steps 2.., from train_log.jsonl), the whole
loop's wall (with the worker's start-up), the ratio to sync, and what was learned after the same
number of steps (GRPO: reward mean of the last 3 steps; OPD: reverse KL of the last 3 steps), so
the speed is not bought with learning.

Then the transport table: bytes per completion token of the logits, top-k (k = 16, 64, 128) and
hidden-state forms, and the gap between the top-k + tail reverse KL and the full reverse KL on real
student rollouts scored by the teacher.

    python benchmarks/bench_async.py [--steps 8] [--threads 2] [--prompts 8] [--samples 4]
                                     [--max-new-tokens 48] [--teacher RUN] [--only grpo,opd,transport]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _run(sets: list[str], out: Path, trainer_cpus=None) -> dict:
    from arena.config import load_run_config
    from arena.experiment import run_training

    all_cpus = os.sched_getaffinity(0)
    if trainer_cpus:
        os.sched_setaffinity(0, trainer_cpus)
    try:
        t0 = time.perf_counter()
        rec = run_training(load_run_config(None, sets + [f"out={out}"]), log=lambda m: None)
        wall = time.perf_counter() - t0
    finally:
        os.sched_setaffinity(0, all_cpus)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if x.strip()]
    steady = [r["seconds"] for r in log[1:]] or [log[0]["seconds"]]
    return {"log": log, "wall": wall, "train_s": rec["train"]["seconds"], "steps_s": len(steady) / sum(steady),
            "services": rec["train"].get("services")}


def _configs(threads: int) -> list[tuple[str, list[str], set | None]]:
    worker = ["train.threads=1", "services.rollout.mode=process", "services.rollout.threads=1", "services.rollout.cpus=[1]"]
    return [("sync", [f"train.threads={threads}"], None),
            ("worker k=0", worker, {0}),
            ("worker k=1", worker + ["services.rollout.max_staleness=1"], {0}),
            ("worker k=2", worker + ["services.rollout.max_staleness=2"], {0})]


def _table(name: str, results: dict, metric: str, label: str) -> None:
    base = results["sync"]["steps_s"]
    print(f"\n{name}: steps/s (steady, steps 2..), loop wall, ratio to sync, {label} (last 3 steps)")
    print(f"| config | steps/s | vs sync | loop s (incl. start-up) | {label} | worker wait s |")
    print("|---|---|---|---|---|---|")
    for k, r in results.items():
        vals = [x[metric] for x in r["log"][-3:] if metric in x]
        wait = (r["services"] or {}).get("rollout", {}).get("wait_s", "")
        print(f"| {k} | {r['steps_s']:.3f} | {r['steps_s'] / base:.2f}x | {r['train_s']:.1f} | "
              f"{sum(vals) / len(vals):.4f} | {wait} |")


def _teacher(args, tmp: Path) -> str:
    if args.teacher:
        return args.teacher
    from arena.config import load_run_config
    from arena.experiment import run_training

    out = tmp / "teacher"
    t0 = time.perf_counter()
    run_training(load_run_config(None, [f"model.name={args.model}", "method.name=lora", "objective.name=sft",
                                        "target.name=arith", "train.steps=30", "train.lr=1e-3", "train.batch_size=8",
                                        f"train.threads={args.threads}", "train.progress=false", "probe.heldout=0", "probe.greedy=0",
                                        f"out={out}"]), log=lambda m: None)
    print(f"teacher: 30-step SFT LoRA on arith in {time.perf_counter() - t0:.0f} s -> {out}")
    return str(out)


def _transport(args, teacher_ref: str) -> None:
    import torch

    from arena import rollouts as R
    from arena.models.loader import load_model
    from arena.objectives.rl_losses import reverse_kl, topk_reverse_kl
    from arena.objectives.teacher import load_teacher, teacher_completion_logits
    from arena.services.transport import bytes_per_token, pack

    torch.set_num_threads(args.threads)
    student, tok, _ = load_model(args.model)
    teacher, _, _ = load_teacher(teacher_ref)
    from arena.components import build_components
    from arena.config import load_run_config

    _, target, _ = build_components(load_run_config(None, ["target.name=arith", "objective.name=sft"]))
    prompts = [e.prompt for e in target.train_examples(0)[: args.prompts * 2]]
    ro = R.sample(student.eval(), tok, R.encode_prompts(tok, prompts), R.SamplingParams(1.0, 1.0, args.max_new_tokens, 2),
                  seed=0, precision="bf16-autocast")
    b = ro.as_batch(tok.pad_token_id)
    with torch.no_grad():
        s_logits, targets = R.completion_logits(student, b, torch.device("cpu"), "bf16-autocast")
    t_logits = teacher_completion_logits(teacher, b, torch.device("cpu"), "bf16-autocast")
    full = reverse_kl(s_logits.float(), t_logits)
    V, d = t_logits.shape[-1], teacher.config.hidden_size
    print(f"\ntransport: {full.numel()} completion tokens of {len(ro)} student rollouts (temperature 1); "
          f"full reverse KL {full.mean():.4f} nats/token")
    print("| form | bytes/token | vs logits | reverse KL | gap to full (mean, relative) |")
    print("|---|---|---|---|---|")
    print(f"| logits (V = {V}) | {bytes_per_token('logits', V, d):,} | 1.000 | {full.mean():.4f} | 0 (exact) |")
    print(f"| hidden (d = {d}) | {bytes_per_token('hidden', V, d):,} | {bytes_per_token('hidden', V, d) / bytes_per_token('logits', V, d):.4f} | "
          f"{full.mean():.4f} | 0 (logits recomputed, bitwise) |")
    for k in (16, 64, 128):
        p = pack("topk", t_logits, None, targets, k, 1.0)
        assert p.wire_bytes == bytes_per_token("topk", V, d, k) * full.numel()
        kl = topk_reverse_kl(s_logits.float(), p.topk_logp, p.topk_idx.long(), p.tail_logp)
        gap = float((full - kl).mean())
        print(f"| top-{k} | {bytes_per_token('topk', V, d, k):,} | {bytes_per_token('topk', V, d, k) / bytes_per_token('logits', V, d):.4f} | "
              f"{kl.mean():.4f} | {gap:.4f} ({gap / float(full.mean()):.1%}) |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--teacher", default=None)
    ap.add_argument("--only", default="grpo,opd,transport")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("bench_async needs at least 2 CPUs (trainer and worker on separate cores)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-async-"))
    common = [f"model.name={args.model}", "method.name=lora", "target.name=arith", f"train.steps={args.steps}",
              "train.batch_size=4", "train.grad_accum=2", "train.seq_len=256", "train.lr=1e-4", "train.warmup_steps=1",
              "train.schedule=constant", "train.precision=bf16-autocast", "train.progress=false", "probe.heldout=0", "probe.greedy=0",
              f"objective.prompts_per_step={args.prompts}", f"objective.max_new_tokens={args.max_new_tokens}"]
    print(f"{args.steps} steps each; {args.prompts} prompts/step; LoRA r8; bf16 autocast; {os.cpu_count()} CPUs")
    if "grpo" in only:
        res = {}
        for name, sets, cpus in _configs(args.threads):
            res[name] = _run(common + ["objective.name=grpo", f"objective.n_samples={args.samples}"] + sets,
                             tmp / f"grpo-{name.replace(' ', '').replace('=', '')}", cpus)
        _table("GRPO", res, "reward_mean", "reward")
    teacher = _teacher(args, tmp) if only & {"opd", "transport"} else None
    if "opd" in only:
        res = {}
        svc = ["services.teacher.mode=process", "services.teacher.threads=1", "services.teacher.cpus=[0]"]
        for name, sets, cpus in _configs(args.threads):
            extra = svc if name != "sync" else []
            res[name] = _run(common + ["objective.name=opd", f"objective.teacher={teacher}", "objective.n_samples=2"]
                             + sets + extra, tmp / f"opd-{name.replace(' ', '').replace('=', '')}", cpus)
        _table("OPD (async rows: the teacher in a service process on core 0)", res, "reverse_kl", "reverse KL")
    if "transport" in only:
        _transport(args, teacher)


if __name__ == "__main__":
    main()
