"""SFT throughput: the arena core vs TRL's SFTTrainer + peft, side by side in one invocation.

Same model (SmolLM2-135M-Instruct, prepared by `arena models prepare`), same examples (the math
target's 2,000 GSM8K train examples in chat format, prompt masked), same method (LoRA r8 α16
all-linear, dropout 0.05), same micro-batch (4 × 256), same number of steps. Each configuration
runs in its own subprocess so its peak memory (RSS) is its own; timing excludes warm-up steps.

    python benchmarks/bench_sft_vs_trl.py [--steps 30] [--warmup 3] [--repeats 2] [--only arena,trl-packed]

Reported: real (non-padding) tokens/s, the ratio to TRL's fastest setting, peak RSS, and
achieved model FLOP/s (6·N·tokens/s, N = total parameters) as a fraction of a bf16 2048³ matmul
measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "arena": "arena core defaults: padding-free, skip dropout, cached casts, fused RoPE + RMSNorm + head/CE",
    "arena-nofuse": "defaults before the fused ops: fused_rope=false, fused_rmsnorm=false",
    "arena-norope": "defaults but fused_rope=false",
    "arena-nonorm": "defaults but fused_rmsnorm=false",
    "arena-v1": "arena core as first landed: rows + block mask, torch dropout, per-forward casts",
    "arena-rows": "defaults but packing=rows (fixed 4 x 256 rows, block-diagonal mask)",
    "arena-torchdrop": "defaults but dropout_sampler=torch",
    "arena-nocache": "defaults but cast_cache=off",
    "arena-nofusedce": "defaults but fused_ce=false (the [n, V] logits, log-softmax and their backward as torch ops)",
    "arena-nodrop": "defaults, LoRA dropout 0 (not the matched setting; shows what dropout costs)",
    "trl-padded": "TRL SFTTrainer bf16, padded batches (no packing)",
    "trl-packed": "TRL SFTTrainer bf16, packing='wrapped'",
    "trl-bfd": "TRL SFTTrainer bf16, packing='bfd' (padding-free)",
    "trl-packed-retain": "trl-packed with glibc malloc keeping freed memory (RETAIN_ENV: no page faults on re-allocation)",
    "arena-retain": "arena defaults with the same allocator setting as trl-packed-retain",
}
ARENA_OVERRIDES = {
    "arena": [],
    "arena-v1": ["train.packing=rows", "train.dropout_sampler=torch", "train.cast_cache=off",
                 "train.fused_rope=false", "train.fused_rmsnorm=false", "train.fused_ce=false"],
    "arena-nofuse": ["train.fused_rope=false", "train.fused_rmsnorm=false"],
    "arena-norope": ["train.fused_rope=false"],
    "arena-nonorm": ["train.fused_rmsnorm=false"],
    "arena-rows": ["train.packing=rows"],
    "arena-torchdrop": ["train.dropout_sampler=torch"],
    "arena-nocache": ["train.cast_cache=off"],
    "arena-nofusedce": ["train.fused_ce=false"],
    "arena-nodrop": ["method.dropout=0"],
    "arena-retain": [],
}
DEFAULT_ONLY = "arena,arena-retain,arena-nofusedce,arena-v1,arena-nodrop,trl-padded,trl-packed,trl-packed-retain,trl-bfd"
# `-retain` rows: glibc's malloc serves no block by mmap and never trims the heap, and torch backs
# large blocks by transparent huge pages, so memory freed in one step's backward is reused by the
# next forward instead of being unmapped and faulted in (zero-filled) again. It is what jemalloc or
# tcmalloc via LD_PRELOAD give; measured (docs/training.md): TRL +60%, the arena +-0 (its step
# allocates no [tokens, vocab] logits), so it is a property of the environment the table shows for
# both, not an arena setting.
RETAIN_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40), "THP_MEM_ALLOC_ENABLE": "1"}
SEQ, BATCH = 256, 4


def examples():
    from arena.config import resolve_data_dir
    from arena.components import TARGETS

    cls = TARGETS.get("math")
    return cls(cls.Options(max_train_examples=2000), resolve_data_dir(None)).train_examples(0)


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_trl(steps: int, warmup: int, mode: str) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from arena.models.catalog import model_dir

    path = str(model_dir("smollm2-135m-instruct"))
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": e.prompt}],
                             "completion": [{"role": "assistant", "content": e.response}]} for e in examples()])
    args = SFTConfig(
        output_dir="/tmp/arena-bench-trl", max_steps=steps + warmup, per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1, learning_rate=2e-4, lr_scheduler_type="constant", warmup_steps=0,
        bf16=True, use_cpu=True, gradient_checkpointing=False, max_length=SEQ, report_to="none",
        save_strategy="no", logging_steps=1000, dataloader_num_workers=0, seed=0,
        packing=mode != "padded", packing_strategy="wrapped" if mode == "packed" else "bfd",
        padding_free=mode == "bfd", completion_only_loss=True, disable_tqdm=True,
    )
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    times, toks = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, s, c, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, a, s, c, **kw):
            times.append(time.perf_counter() - self.t)

    class CountingTrainer(SFTTrainer):
        def training_step(self, model, inputs, *a, **kw):
            if "attention_mask" in inputs and mode == "padded":
                toks.append(int(inputs["attention_mask"].sum()))
            else:
                toks.append(int(inputs["input_ids"].numel()))
            return super().training_step(model, inputs, *a, **kw)

    trainer = CountingTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=lora,
                              callbacks=[Timer()])
    trainer.train()
    n_params = sum(p.numel() for p in trainer.model.parameters())
    return {"history": {"times": times, "tokens": toks}, "n_params": n_params}


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    a @ b
    best = min((lambda t0: (a @ b, time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(reps))
    return 2 * n**3 / best


def child(name: str, steps: int, warmup: int) -> None:
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    if name.startswith("arena"):
        from arena.config import load_run_config
        from arena.experiment import run_training
        from arena.training import loop

        per_step = []
        orig = loop.train

        def wrapped(*a, **kw):
            res = orig(*a, **kw)
            per_step.extend(res.history)
            return res

        loop.train = wrapped
        import arena.experiment as ex  # run_training calls loop.train through the module, so the wrapper is seen

        cfg = load_run_config(None, [
            "model.name=smollm2-135m-instruct", "method.name=lora", "method.dropout=0.05",
            "target.name=math", "target.max_train_examples=2000", f"train.steps={steps + warmup}",
            f"train.batch_size={BATCH}", f"train.seq_len={SEQ}", "train.progress=false", "probe.heldout=0",
            "probe.greedy=0", "train.lr=2e-4", "train.schedule=constant", "train.warmup_steps=0",
            *ARENA_OVERRIDES[name],
        ])
        rec = ex.run_training(cfg, log=lambda s: None)
        times = [h["seconds"] for h in per_step][warmup:]
        toks = [h["tokens"] for h in per_step][warmup:]
        n_params = rec["method"]["total_params"]
    else:
        out = run_trl(steps, warmup, name.split("-")[1])  # trl-packed-retain: packed
        times, toks = out["history"]["times"][warmup:], out["history"]["tokens"][warmup:]
        n_params = out["n_params"]
    print("RESULT " + json.dumps({"name": name, "tok_s": sum(toks) / sum(times), "steps": len(times),
                                  "tokens": sum(toks), "seconds": sum(times), "peak_rss_mb": peak_rss_mb(),
                                  "n_params": n_params}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved rounds; the table shows medians")
    ap.add_argument("--only", default=DEFAULT_ONLY, help=f"comma-separated, from: {', '.join(CONFIGS)}")
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.steps, args.warmup)
        return
    import torch

    peak = matmul_peak()
    print(f"bf16 2048^3 matmul: {peak / 1e9:.0f} GFLOP/s on {torch.get_num_threads()} threads")
    names = args.only.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        sys.exit(f"--only: unknown config(s) {', '.join(unknown)}; allowed: {', '.join(CONFIGS)}")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    # Rounds interleave the configurations (A B C, A B C, ...): on shared cores the machine's speed
    # drifts by 10-20% over minutes, and interleaving spreads that drift over every configuration.
    for rnd in range(args.repeats):
        for name in names:
            t0 = time.perf_counter()
            env = {**os.environ, **(RETAIN_ENV if name.endswith("-retain") else {})}
            proc = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(args.steps),
                                   "--warmup", str(args.warmup)], capture_output=True, text=True, env=env)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(f"{name}: FAILED\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(line[7:])
            r["wall_s"] = time.perf_counter() - t0
            runs[name].append(r)
            print(f"  round {rnd + 1}: {name}: {r['tok_s']:.0f} tok/s ({r['wall_s']:.0f}s wall)", flush=True)
    results = []
    for name, rs in runs.items():
        if rs:
            med = statistics.median(r["tok_s"] for r in rs)
            results.append({**rs[0], "tok_s": med, "all": [r["tok_s"] for r in rs],
                            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)})
    trl = [r for r in results if r["name"].startswith("trl")]
    best = max(trl, key=lambda r: r["tok_s"]) if trl else None
    print(f"\n{'config':16s} {'tok/s':>8s} {'vs TRL best':>11s} {'peak RSS MB':>11s} {'% bf16 peak':>11s}  "
          f"{'runs':18s} description")
    for r in results:
        ratio = r["tok_s"] / best["tok_s"] if best else float("nan")
        mfu = 6 * r["n_params"] * r["tok_s"] / peak
        runs_s = "/".join(f"{v:.0f}" for v in r["all"])
        print(f"{r['name']:16s} {r['tok_s']:8.0f} {ratio:10.2f}x {r['peak_rss_mb']:11.0f} {mfu:11.1%}  {runs_s:18s} "
              f"{CONFIGS[r['name']]}")
    if best:
        arena = next((r for r in results if r["name"] == "arena"), None)
        if arena and len(arena["all"]) > 1:
            # paired by round: each round's arena run against the fastest TRL run of that round
            trl_names = [r["name"] for r in trl]
            paired = [runs["arena"][i]["tok_s"] / max(runs[n][i]["tok_s"] for n in trl_names)
                      for i in range(args.repeats) if all(len(runs[n]) > i for n in ["arena", *trl_names])]
            print(f"\narena / fastest TRL, per round: {', '.join(f'{v:.2f}x' for v in paired)}; "
                  f"worst case across rounds (slowest arena / fastest TRL run): {min(arena['all']) / max(best['all']):.2f}x")
        stock = [r for r in trl if not r["name"].endswith("-retain")]
        if arena and stock and len(stock) < len(trl):
            sbest = max(stock, key=lambda r: r["tok_s"])
            print(f"\narena / fastest TRL with the default allocator ({sbest['name']}, as TRL runs stock): "
                  f"{arena['tok_s'] / sbest['tok_s']:.2f}x; the table's ratios are against the fastest TRL row, "
                  f"allocator setting included")
        print(f"\nTRL fastest: {best['name']} ({best['tok_s']:.0f} tok/s, median of {len(best['all'])}). "
              f"{args.steps} timed steps after {args.warmup} warm-up, batch {BATCH} x {SEQ}, LoRA r8 α16 "
              f"dropout 0.05 all-linear, SmolLM2-135M-Instruct, GSM8K (2,000 examples).")


if __name__ == "__main__":
    main()
