"""Rollout throughput: arena's sampler vs plain `model.generate`, and where a GRPO step's time goes.

One process, the real model (SmolLM2-135M-Instruct, `arena models prepare`), LoRA r8 wrapped as in
training, bf16 autocast, the same prompts for every sampler (8 prompts x 4 samples, chat template,
left-padded into one batch of 32), sampling at temperature 1 with up to 48 new tokens, stopping at
EOS. Each sampler gets one warm-up call, then `--repeats` timed calls in alternation.

    python benchmarks/bench_rollouts.py [--prompts 8] [--samples 4] [--max-new-tokens 48] [--repeats 2]
                                        [--target arith] [--grpo-steps 2] [--threads 2]

Reported: completion tokens/s (real tokens, up to and including EOS) and slots/s (sequences x
decode steps, the work done whatever was sampled) of
  arena-native    arena.rollouts.sample, engine "native" (arena's decoder, continuous batching;
                  the engine is built from the LoRA model's merged weights inside every call)
  arena-hf        arena.rollouts.sample, engine "hf" (KV-cache loop, log-probs, decode)
  arena-generate  arena.rollouts.sample, engine "generate" (model.generate + raw logits)
  plain-generate  model.generate(do_sample=True) alone, no log-probs, no decode
and the ratio of each to plain-generate; then `--grpo-steps` GRPO steps through the training loop
with the same shape (prompts_per_step=8, n_samples=4) for each `--grpo-backends` engine, split into
generation (sampling) and the rest (rewards, loss forward/backward, optimizer): the generation
share of a step before (hf) and after (native).
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--target", default="arith")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--grpo-steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grpo-backends", default="hf,native")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from arena.config import load_run_config
    from arena.components import build_components
    from arena.experiment import seed_everything
    from arena.runs import load_and_wrap
    from arena.objectives.base import TrainContext
    from arena.generation.backends.hf import left_pad
    from arena.generation.engine import stop_token_ids
    from arena.rollouts import SamplingParams, encode_prompts, sample
    from arena.training.device import autocast
    from arena.training.loop import train

    dev, prec = torch.device("cpu"), "bf16-autocast"
    P, n, T = args.prompts, args.samples, args.max_new_tokens
    overrides = [
        f"model.name={args.model}", "method.name=lora", f"target.name={args.target}", "objective.name=grpo",
        f"objective.n_samples={n}", f"objective.prompts_per_step={P}", f"objective.max_new_tokens={T}",
        f"train.steps={args.grpo_steps}", "train.warmup_steps=0", "train.progress=false", "train.device=cpu",
        "train.precision=bf16-autocast", "probe.heldout=0", "probe.greedy=0"]
    cfg = load_run_config(None, overrides)
    method, target, objective = build_components(cfg)
    seed_everything(0)
    model, tok, info = load_and_wrap(cfg, method, dev)
    prompts = [e.prompt for e in target.heldout_examples(P, 0)]
    prompt_ids = encode_prompts(tok, prompts)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=T, n=n)
    flat = [p for p in prompt_ids for _ in range(n)]
    stops = stop_token_ids(tok, model)

    def arena(backend):
        def fn(seed):
            r = sample(model, tok, prompt_ids, params, seed, dev, prec, backend)
            return int(r.completion_mask.sum()), r.completion_ids.numel()
        return fn

    @torch.no_grad()
    def plain(seed):
        model.eval()
        ids, att = left_pad(flat, tok.pad_token_id)
        torch.manual_seed(seed)
        with autocast(dev, prec):
            out = model.generate(input_ids=ids, attention_mask=att, do_sample=True, temperature=1.0, top_p=1.0,
                                 top_k=0, max_new_tokens=T, pad_token_id=tok.pad_token_id, eos_token_id=stops)
        comp = out[:, ids.shape[1]:]
        is_stop = torch.isin(comp, torch.tensor(stops))
        before = torch.cat([torch.zeros_like(is_stop[:, :1]), is_stop[:, :-1]], 1).long().cumsum(1) > 0
        return int((~before).sum()), comp.numel()

    samplers = {"arena-native": arena("native"), "arena-hf": arena("hf"), "arena-generate": arena("generate"), "plain-generate": plain}
    for fn in samplers.values():  # warm-up
        fn(999)
    stats = {k: {"tokens": 0, "slots": 0, "seconds": 0.0} for k in samplers}
    for r in range(args.repeats):
        for name, fn in samplers.items():
            t0 = time.perf_counter()
            real, slots = fn(r)
            stats[name]["seconds"] += time.perf_counter() - t0
            stats[name]["tokens"] += real
            stats[name]["slots"] += slots
    base = stats["plain-generate"]["tokens"] / stats["plain-generate"]["seconds"]
    base_slots = stats["plain-generate"]["slots"] / stats["plain-generate"]["seconds"]
    print(f"model {info.name} + LoRA r8, bf16 autocast, {torch.get_num_threads()} threads; "
          f"{P} prompts x {n} samples, <= {T} new tokens, temperature 1, {args.repeats} timed calls each")
    # Samples differ between samplers, so real tokens differ too; "slots" (sequences x decode steps
    # of the longest completion) is the work each call actually did, the fairer speed comparison.
    print(f"{'sampler':16s} {'tokens':>7s} {'slots':>6s} {'seconds':>8s} {'tok/s':>7s} {'vs plain':>9s} "
          f"{'slots/s':>8s} {'vs plain':>9s}")
    for name, s in stats.items():
        tps, sps = s["tokens"] / s["seconds"], s["slots"] / s["seconds"]
        s.update(tokens_per_s=round(tps, 1), ratio=round(tps / base, 3), slots_per_s=round(sps, 1),
                 slots_ratio=round(sps / base_slots, 3))
        print(f"{name:16s} {s['tokens']:7d} {s['slots']:6d} {s['seconds']:8.2f} {tps:7.1f} {tps / base:9.2f} "
              f"{sps:8.1f} {sps / base_slots:9.2f}")

    rows = []
    for backend in args.grpo_backends.split(","):
        cfg_b = load_run_config(None, [*overrides, f"objective.backend={backend}"])
        _, _, objective = build_components(cfg_b)
        seed_everything(0)
        model, tok, info = load_and_wrap(cfg_b, method, dev)
        ctx = TrainContext(model=model, tokenizer=tok, target=target, train=cfg_b.train, device=dev, precision=prec, seed=0)
        objective.prepare(ctx)
        model.train()
        res = train(ctx, objective, method, None, cfg_b.train.lr or method.default_lr)
        print(f"\nGRPO steps, engine {backend} (LoRA, {P} prompts x {n} samples, <= {T} new tokens, reward {objective.reward_name}):")
        print(f"{'step':>4s} {'total s':>8s} {'gen s':>7s} {'gen %':>6s} {'train s':>8s} {'resp len':>9s} {'reward':>7s}")
        for h in res.history:
            gen = h["gen_s"]
            rows.append({"backend": backend, "step": h["step"], "seconds": h["seconds"], "gen_s": round(gen, 3),
                         "gen_share": round(gen / h["seconds"], 3), "response_length": h["response_length"],
                         "reward_mean": h["reward_mean"]})
            print(f"{h['step']:4d} {h['seconds']:8.2f} {gen:7.2f} {100 * gen / h['seconds']:5.1f}% "
                  f"{h['seconds'] - gen:8.2f} {h['response_length']:9.1f} {h['reward_mean']:7.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"samplers": stats, "grpo_steps": rows, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
