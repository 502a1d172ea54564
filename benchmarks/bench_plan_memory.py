"""`arena plan`'s per-device peak memory against the measured peak of the same runs, side by side.

    python benchmarks/bench_plan_memory.py            # the default model and tiny, on this CPU (~5 min)
    python benchmarks/bench_plan_memory.py --quick    # tiny and one default-model case

Each case runs in a fresh process and trains 3 steps through `run_training` (the real loop, fast
paths included) while a thread samples the process's resident memory every 2 ms. Measured = peak
RSS during `loop.train` - RSS just before it + the model's parameter bytes (resident before, counted
by the plan), so what loading and the tokenizer hold is left out on both sides. RSS follows live
memory only if freed memory goes back to the OS: glibc keeps freed heap chunks resident and raises
its mmap threshold as large blocks are freed, so a training step could reuse memory that loading
freed and never show in RSS. Each case therefore runs with a fixed 64 KiB mmap threshold (every
tensor past it is its own mapping, returned on free) and calls malloc_trim just before training,
after reading every weight once (the model's safetensors are mapped lazily: untouched weights are
not yet resident and would be counted twice).
The plan is `plan_run` on the same config with the label share of the run's own first batches.
RSS still holds allocator slack and runtime overhead, which the plan does not model; the ratio
column is what docs/distributed.md#planner reports.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

BASE = ["target.name=arith", "train.steps=3", "train.device=cpu", "train.progress=false", "probe.heldout=0",
        "probe.greedy=0", "train.warmup_steps=0"]
CASES = {
    "tiny full b16x256": ["model.name=tiny", "method.name=full", "train.batch_size=16", "train.seq_len=256"],
    "smollm2 lora b1x256": ["model.name=smollm2-135m-instruct", "method.name=lora", "train.batch_size=1",
                            "train.seq_len=256"],
    "smollm2 lora b4x256": ["model.name=smollm2-135m-instruct", "method.name=lora", "train.batch_size=4",
                            "train.seq_len=256"],
    "smollm2 lora b4x256 ckpt": ["model.name=smollm2-135m-instruct", "method.name=lora", "train.batch_size=4",
                                 "train.seq_len=256", "train.activation_checkpointing=true"],
    "smollm2 full b4x256": ["model.name=smollm2-135m-instruct", "method.name=full", "train.batch_size=4",
                            "train.seq_len=256"],
    "smollm2 full b4x256 ckpt": ["model.name=smollm2-135m-instruct", "method.name=full", "train.batch_size=4",
                                 "train.seq_len=256", "train.activation_checkpointing=true"],
    "smollm2 lora b8x512": ["model.name=smollm2-135m-instruct", "method.name=lora", "train.batch_size=8",
                            "train.seq_len=512"],
}
QUICK = ("tiny full b16x256", "smollm2 lora b4x256")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(sets: list[str]) -> tuple[float, float, float]:
    """(measured peak MiB, planned peak MiB, label share) of one case."""
    from arena.config import load_run_config
    from arena.experiment import run_training
    from arena.planning.plan import Devices, plan_run
    from arena.training import loop
    import torch

    cfg = load_run_config(None, BASE + sets)
    box: dict = {}
    real = loop.train

    def tracked(ctx, objective, method, out, lr, dist=None):
        first = objective.batches(ctx, 0)
        t = ctx.train
        box["label"] = sum(b["n_loss_tokens"] for b in first) / (len(first) * t.batch_size * t.seq_len)
        del first
        params = sum(p.numel() * p.element_size() for p in ctx.model.parameters())
        peak, stop = [0], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], _rss())
                time.sleep(0.002)

        with torch.no_grad():  # page in every weight: loading maps the safetensors file lazily, so
            for p in ctx.model.parameters():  # untouched weights are not in RSS yet (measured: 300 of
                float(p.sum())  # SmolLM2's 513 MiB) and would be counted twice below
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        before = _rss()
        th = threading.Thread(target=sample, daemon=True)
        th.start()
        try:
            return real(ctx, objective, method, out, lr)
        finally:
            stop.set()
            th.join()
            box["measured"] = (max(peak[0], _rss()) - before + params) / 2**20

    loop.train = tracked
    try:
        run_training(cfg, log=lambda m: None)
    finally:
        loop.train = real
    plan = plan_run(cfg, Devices(), 1, label_fraction=box["label"])
    return box["measured"], plan.peak / 2**20, box["label"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--case", help=argparse.SUPPRESS)  # one case, in this process (the child)
    args = p.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("ARENA_BENCH_THREADS", "2")))
    if args.case:
        print(json.dumps(measure(CASES[args.case])))
        return
    names = QUICK if args.quick else tuple(CASES)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    print(f"{'case':28s} {'label share':>11s} {'measured MiB':>13s} {'planned MiB':>12s} {'plan/measured':>14s}")
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--case", name], env=env, capture_output=True, text=True,
                             check=True).stdout
        m, planned, label = json.loads(out.strip().splitlines()[-1])
        print(f"{name:28s} {label:11.2f} {m:13.0f} {planned:12.0f} {planned / m:14.2f}", flush=True)


if __name__ == "__main__":
    main()
