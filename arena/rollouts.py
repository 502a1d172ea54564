"""Rollouts: the one sampling module every rollout objective (GRPO, OPD, GKD) uses.

`sample()` draws `n` completions per prompt from the current policy, batched with a KV cache,
stopping each sequence at EOS, and returns per sample the prompt ids, completion ids, a completion
mask (up to and including the EOS token), the behaviour policy's token log-probs and the decoded
text. Log-probs are those of the temperature-scaled distribution, log softmax(z / T)[x], which is
what the losses recompute with gradient; top-p truncation changes what is sampled but not this
formula (as in TRL and verl), so an on-policy ratio is exactly 1 up to numerics.

The sampling itself is a generation engine's (arena/generation/engine.py, chosen by
`objective.backend`): "auto" (the default: native on CPU, vLLM on CUDA where installed), "native"
(arena's decoder with continuous batching), "hf" (a plain sampling loop over the transformers forward
with a KV cache, seeded with its own torch.Generator — the reference), "generate" (`model.generate`)
and "vllm". Every engine is seeded from the call's seed, so the same seed gives the same samples.

The rest is the plumbing rollout objectives share: a seeded prompt stream (`PromptPool`), the
right-padded sequences the losses run on (`sequence_batch`) and the logits at completion tokens
(`completion_logits`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from arena.errors import ConfigError
from arena.generation.engine import EngineOptions, build_engine, stop_token_ids
from arena.generation.names import check_engine_name
from arena.generation.requests import GenRequest, Sampling
from arena.objectives.losses import IGNORE, label_logits
from arena.training.device import autocast
from arena.training.packing import chat_texts


@dataclass
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy (log-probs then of the untempered distribution)
    top_p: float = 1.0
    max_new_tokens: int = 64
    n: int = 1  # samples per prompt

    def __post_init__(self):
        if self.temperature < 0:
            raise ConfigError("temperature", self.temperature, "must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p", self.top_p, "must be in (0, 1]")
        if self.max_new_tokens <= 0:
            raise ConfigError("max_new_tokens", self.max_new_tokens, "must be a positive integer")
        if self.n <= 0:
            raise ConfigError("n", self.n, "must be a positive integer")


@dataclass
class Rollouts:
    """N = prompts × n samples; sample i belongs to prompt `group[i]` (groups are contiguous)."""

    prompt_ids: list[list[int]]
    completion_ids: torch.Tensor  # [N, T] long, pad after the end
    completion_mask: torch.Tensor  # [N, T] bool, True up to and including the stop token
    logprobs: torch.Tensor  # [N, T] float32, behaviour log-probs (0 where masked)
    texts: list[str]
    group: torch.Tensor  # [N] long: index of the prompt in the call's prompt list
    finished: torch.Tensor  # [N] bool: ended with a stop token (False: cut at max_new_tokens)
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(dim=1)

    def completion_lists(self) -> list[list[int]]:
        return [self.completion_ids[i][self.completion_mask[i]].tolist() for i in range(len(self))]

    def as_batch(self, pad_id: int) -> dict:
        """The rollouts as a right-padded training batch (see `sequence_batch`)."""
        return sequence_batch(self.prompt_ids, self.completion_lists(), pad_id)


@torch.no_grad()
def sample(model, tokenizer, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, seed: int,
           device: torch.device | str = "cpu", precision: str = "fp32", backend: str = "auto",
           max_batch: int = 64) -> Rollouts:
    """`params.n` completions for each prompt (token ids, e.g. from `encode_prompts`).

    `backend` is a generation engine (arena/generation/engine.py; auto: the native engine on CPU,
    vLLM on CUDA where installed); it reads the model's current weights, in eval mode (no dropout),
    and the model's mode is restored after. The hf/generate engines run chunks of `max_batch`
    sequences; the native engine batches all of them with continuous batching.
    Same model, prompts, params, seed and engine -> the same samples.
    """
    if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
        raise ValueError("sample() needs at least one prompt, none of them empty")
    check_engine_name(backend, "objective.backend")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    try:
        engine = build_engine(backend, model, tokenizer, device=device, precision=precision,
                              options=EngineOptions(max_batch=max_batch), field="objective.backend")
        stop_ids = stop_token_ids(tokenizer, model)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
        flat = [list(p) for p in prompt_ids for _ in range(params.n)]
        done = engine.generate([GenRequest(p, params.max_new_tokens) for p in flat],
                               Sampling(params.temperature, params.top_p), seed)
    finally:
        model.train(was_training)
    group = torch.arange(len(prompt_ids)).repeat_interleave(params.n)
    T = max(1, max(len(c.token_ids) for c in done))
    comp = torch.full((len(flat), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(flat), T), dtype=torch.bool)
    logp = torch.zeros((len(flat), T), dtype=torch.float32)
    for i, c in enumerate(done):
        n = len(c.token_ids)
        comp[i, :n] = torch.tensor(c.token_ids, dtype=torch.long)
        mask[i, :n] = True
        logp[i, :n] = torch.tensor(c.logprobs, dtype=torch.float32)
    finished = torch.tensor([c.finish_reason == "stop" for c in done], dtype=torch.bool)
    texts = tokenizer.batch_decode([c.token_ids for c in done], skip_special_tokens=True)
    return Rollouts(prompt_ids=flat, completion_ids=comp, completion_mask=mask, logprobs=logp, texts=texts,
                    group=group, finished=finished, seconds=time.perf_counter() - t0,
                    meta={"backend": engine.name, "seed": seed})


# -- prompts -----------------------------------------------------------------------------------------

def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Chat-template each user prompt (ending in the assistant header) and tokenize it."""
    texts = [chat_texts(tokenizer, p)[0] for p in prompts]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


class PromptPool:
    """The prompts a rollout objective trains on, in a seeded, resumable order.

    Prompt j of the infinite stream is item perm_e[j % N] of epoch e = j // N, each epoch with its
    own seeded permutation (as SFT orders its rows): any step's prompts are known without replaying
    the stream, so resume needs no data state and every method of a sweep sees the same prompts.
    Prompts longer than `max_prompt_tokens` and examples without an answer (when required) are
    dropped and counted.
    """

    def __init__(self, tokenizer, examples, max_prompt_tokens: int, need_answer: bool = False):
        ids = encode_prompts(tokenizer, [e.prompt for e in examples]) if examples else []
        keep = [i for i, e in enumerate(examples)
                if len(ids[i]) <= max_prompt_tokens and (e.answer is not None or not need_answer)]
        self.examples = [examples[i] for i in keep]
        self.prompt_ids = [ids[i] for i in keep]
        self.n_dropped = len(examples) - len(keep)

    def __len__(self) -> int:
        return len(self.examples)

    def indices(self, seed: int, start: int, count: int) -> list[int]:
        N = len(self)
        idx = np.arange(start, start + count)
        out = np.empty(count, dtype=np.int64)
        for e in np.unique(idx // N):
            perm = np.random.default_rng([seed, int(e)]).permutation(N)
            sel = idx // N == e
            out[sel] = perm[idx[sel] % N]
        return out.tolist()

    def micro_batches(self, seed: int, step: int, per_step: int, n_micro: int,
                      only: range | None = None) -> list[tuple[int, list[int]]]:
        """(m, prompt indices) of each of a step's `n_micro` micro-batches (sizes differ by at most
        1), or of those in `only` (a rank's `ctx.micro_range()` under sharded training)."""
        idx = self.indices(seed, step * per_step, per_step)
        bounds = np.linspace(0, per_step, n_micro + 1).round().astype(int)
        return [(m, idx[bounds[m]:bounds[m + 1]]) for m in (only if only is not None else range(n_micro))]


# -- sequences the losses run on -----------------------------------------------------------------

def sequence_batch(prompt_ids: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int) -> dict:
    """Right-padded prompt+completion rows with labels only on completion tokens.

    Right padding needs no attention mask: under the causal mask a real token never attends to
    the padding after it. `completion_mask` [N, T] marks, per row, the completion tokens in order,
    so per-token tensors in the flattened (row-major) order of `label_logits` map back to rows.
    """
    rows = [list(p) + list(c) for p, c in zip(prompt_ids, completions)]
    L = max(len(r) for r in rows)
    T = max(1, max(len(c) for c in completions))
    input_ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), L), IGNORE, dtype=torch.long)
    cmask = torch.zeros((len(rows), T), dtype=torch.bool)
    for i, (p, c) in enumerate(zip(prompt_ids, completions)):
        input_ids[i, : len(rows[i])] = torch.tensor(rows[i], dtype=torch.long)
        if c:
            labels[i, len(p): len(p) + len(c)] = torch.tensor(list(c), dtype=torch.long)
            cmask[i, : len(c)] = True
    return {"input_ids": input_ids, "labels": labels, "completion_mask": cmask,
            "n_real": sum(len(r) for r in rows), "n_completion": int(cmask.sum())}


def completion_logits(model, batch: dict, device, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [n, V] at the positions predicting completion tokens, and those tokens [n].

    Row-major order, the same as `batch['completion_mask'][mask]`. Runs the forward under the
    run's autocast; callers take log-softmax in fp32.
    """
    with autocast(device, precision):
        return label_logits(model, batch["input_ids"].to(device), batch["labels"].to(device))


# -- shared by the rollout objectives ------------------------------------------------------------

def check_sampling_options(o, need_temperature: bool = True) -> None:
    """Field checks every rollout objective's Options share (names without the 'objective.' prefix)."""
    if need_temperature and not o.temperature > 0:
        raise ConfigError("temperature", o.temperature, "must be > 0 (rollouts must be sampled)")
    if not 0 < o.top_p <= 1:
        raise ConfigError("top_p", o.top_p, "must be in (0, 1]")
    if o.max_new_tokens <= 0:
        raise ConfigError("max_new_tokens", o.max_new_tokens, "must be a positive integer")
    if o.prompts_per_step is not None and o.prompts_per_step <= 0:
        raise ConfigError("prompts_per_step", o.prompts_per_step, "must be a positive integer or null (train.batch_size x train.grad_accum)")
    check_engine_name(o.backend, "backend")


def prompt_pool_for(ctx, max_new_tokens: int, need_answer: bool) -> PromptPool:
    """The target's train prompts that leave room for `max_new_tokens` within train.seq_len."""
    budget = ctx.train.seq_len - max_new_tokens
    if budget <= 0:
        raise ConfigError("objective.max_new_tokens", max_new_tokens, f"must be < train.seq_len ({ctx.train.seq_len})")
    pool = PromptPool(ctx.tokenizer, ctx.target.train_examples(ctx.seed), budget, need_answer=need_answer)
    if not len(pool):
        raise ConfigError("train.seq_len", ctx.train.seq_len,
                          f"no training prompt fits in train.seq_len - objective.max_new_tokens = {budget} tokens"
                          + (" with a reference answer" if need_answer else "")
                          + "; raise train.seq_len or lower objective.max_new_tokens")
    return pool


def prompts_per_step(requested: int | None, train) -> int:
    """objective.prompts_per_step, defaulting to train.batch_size x train.grad_accum (as SFT's rows)."""
    n = requested if requested is not None else train.batch_size * train.grad_accum
    if n < train.grad_accum:
        raise ConfigError("objective.prompts_per_step", n, f"must be >= train.grad_accum ({train.grad_accum}): "
                          "every micro-batch needs at least one prompt")
    return n


@dataclass
class SampleJob:
    """One micro-batch's sampling request: what `sample` needs besides the model, so that it can
    run in this process or in a rollout worker (arena/services/rollout_worker.py)."""

    m: int  # the micro-batch's index in the step
    prompt_ids: list[list[int]]
    params: SamplingParams
    seed: int
    backend: str


def run_jobs(ctx, step: int, plan) -> list[tuple[int, Rollouts]]:
    """[(m, Rollouts)] of step `step`'s jobs, `plan(t)` giving any step t's jobs (deterministic in t).

    With a rollout service (`ctx.extras['rollout_source']`, services.rollout.mode process/ray) the
    samples come from a worker that may have drawn them with weights up to max_staleness steps old,
    and the service may call `plan` for later steps to sample them ahead; otherwise they are drawn
    here from the current weights. `Rollouts.meta['policy_version']` is the weights' step either way.
    """
    source = ctx.extras.get("rollout_source")
    if source is not None:
        return source.rollouts(step, plan)
    out = []
    for job in plan(step):
        ro = sample(ctx.model, ctx.tokenizer, job.prompt_ids, job.params, job.seed, ctx.device, ctx.precision, job.backend)
        ro.meta["policy_version"] = step
        out.append((job.m, ro))
    return out


def step_rollouts(ctx, pool: PromptPool, per_step: int, params: SamplingParams, step: int, tag: int,
                  backend: str) -> list[tuple[list[int], Rollouts, dict]]:
    """A step's micro-batches of rollouts, [(prompt indices, Rollouts, padded batch)]: each micro-batch
    sampled with its own seed derived from (seed, step, micro-batch, tag)."""
    from arena.generation.seeds import derive_seed

    def plan(t: int) -> list[SampleJob]:
        return [SampleJob(m, [pool.prompt_ids[i] for i in idx], params, derive_seed(ctx.seed, t, m, tag), backend)
                for m, idx in pool.micro_batches(ctx.seed, t, per_step, ctx.train.grad_accum, only=ctx.micro_range())]

    idx_of = dict(pool.micro_batches(ctx.seed, step, per_step, ctx.train.grad_accum, only=ctx.micro_range()))
    return [(idx_of[m], ro, ro.as_batch(ctx.tokenizer.pad_token_id)) for m, ro in run_jobs(ctx, step, plan)]


def rollout_metrics(ro: Rollouts) -> dict:
    lengths = ro.lengths.float()
    out = {"response_length": float(lengths.mean()), "truncated": float((~ro.finished).float().mean())}
    if "staleness" in ro.meta:  # sampled by a rollout worker: steps between the sampling weights and these
        out["staleness"] = float(ro.meta["staleness"])
    return out
