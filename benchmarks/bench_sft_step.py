"""One SFT step's forward + backward with a train option on and off, alternating in one process.

Separate processes (bench_sft_vs_trl.py) see the machine's drift between runs, which on shared
2-core machines is larger than a 5-10% change; here the same model, the same micro-batches and the
same dropout seeds run with the option on and off in alternation, so the per-round ratio is what
the option changes.

    python benchmarks/bench_sft_step.py [--option fused_ce] [--rounds 6] [--micro 2]

Options: fused_ce (the objective reads it at each loss) and fused_lora (installed before and
removed after each "on" micro-batch; the cast cache and skip dropout stay installed for both).
Reported: seconds per micro-batch (median over rounds) and the median of the per-round ratios
off/on (> 1: the option is faster).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

SWITCHABLE = ("fused_ce", "fused_lora")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--option", default="fused_ce", choices=SWITCHABLE)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--micro", type=int, default=2, help="micro-batches timed per variant and round")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from arena.config import load_run_config
    from arena.components import build_components
    from arena.runs import load_and_wrap
    from arena.objectives.base import TrainContext
    from arena.training.device import pick_device, resolve_precision
    from arena.training.fused_lora import install_fused_lora
    from arena.training.loop import install_fast_paths

    cfg = load_run_config(None, [f"model.name={a.model}", "method.name=lora", "method.dropout=0.05", "target.name=math",
                                 "target.max_train_examples=2000", "train.batch_size=4", "train.seq_len=256",
                                 "probe.heldout=0", "probe.greedy=0"])
    method, target, objective = build_components(cfg)
    device = pick_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)
    torch.manual_seed(0)
    model, tok, _ = load_and_wrap(cfg, method, device)
    ctx = TrainContext(model=model, tokenizer=tok, target=target, train=cfg.train, device=device,
                       precision=precision, seed=0, rank=0, world=1)
    objective.prepare(ctx)
    batches = [b for step in range(a.micro + 1) for b in objective.batches(ctx, step)][:a.micro + 1]
    on, off = (True, False) if a.option == "fused_ce" else ("on", "off")
    base_cfg = dataclasses.replace(cfg.train, fused_lora="off")  # installed per variant below
    variants = {"on": dataclasses.replace(base_cfg, **{a.option: on}),
                "off": dataclasses.replace(base_cfg, **{a.option: off})}
    _, undo = install_fast_paths(model, base_cfg, device)

    def run(train_cfg, batch, seed) -> float:
        ctx.train = train_cfg
        restore = install_fused_lora(model) if train_cfg.fused_lora == "on" else None
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        out = objective.loss(ctx, batch)
        (out.loss_sum / max(1, out.n_tokens)).backward()
        dt = time.perf_counter() - t0
        model.zero_grad(set_to_none=True)
        if restore is not None:
            assert restore.count > 0, "no LoRA layer took the fused forward"
            restore()
        return dt

    for v in variants.values():  # warm-up: first-call allocations and kernel selection
        run(v, batches[0], 0)
    times = {k: [] for k in variants}
    for r in range(a.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))  # neither always goes first
        for k in order:
            times[k].append(sum(run(variants[k], b, i) for i, b in enumerate(batches[1:])) / a.micro)
    for fn in undo:
        fn()
    ratios = [off / on for on, off in zip(times["on"], times["off"])]
    tokens = statistics.mean(int(b.get("n_real", 0)) for b in batches[1:])
    print(f"train.{a.option}: {a.rounds} rounds x {a.micro} micro-batches (~{tokens:.0f} real tokens each), "
          f"{torch.get_num_threads()} threads, {a.model}, LoRA r8 dropout 0.05, 4 x 256")
    for k in variants:
        print(f"  {k:4s} {statistics.median(times[k]):.3f} s per micro-batch (rounds: {', '.join(f'{t:.3f}' for t in times[k])})")
    print(f"  off/on ratio: median {statistics.median(ratios):.3f} (per round: {', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()
