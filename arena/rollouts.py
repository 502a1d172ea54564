"""Rollouts: the one sampling module every rollout objective (GRPO, OPD, GKD) uses.

`sample()` draws `n` completions per prompt from the current policy, batched with a KV cache,
stopping each sequence at EOS, and returns per sample the prompt ids, completion ids, a completion
mask (up to and including the EOS token), the behaviour policy's token log-probs and the decoded
text. Log-probs are those of the temperature-scaled distribution, log softmax(z / T)[x], which is
what the losses recompute with gradient; top-p truncation changes what is sampled but not this
formula (as in TRL and verl), so an on-policy ratio is exactly 1 up to numerics.

Backends are registered in BACKENDS: "hf" is a plain sampling loop over the transformers forward
with a KV cache (seeded with its own torch.Generator, so it never touches the global RNG and the
same seed gives the same samples); "generate" wraps `model.generate` (seeded via a forked global
RNG). A vLLM backend registers a function with the same signature:
`fn(model, prompt_ids, params, seed, stop_ids, pad_id, device, precision) -> (ids, mask, logprobs)`.

The rest is the plumbing rollout objectives share: a seeded prompt stream (`PromptPool`), the
right-padded sequences the losses run on (`sequence_batch`) and the logits at completion tokens
(`completion_logits`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from arena.errors import ConfigError, suggest
from arena.models.loader import unwrap_peft
from arena.objectives.losses import IGNORE, label_logits
from arena.registry import Registry
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


Backend = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
BACKENDS: Registry[Backend] = Registry("rollout backend")


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """EOS of the tokenizer plus the model's generation-config EOS ids (chat models often differ)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gc = getattr(model, "generation_config", None)
    eos = getattr(gc, "eos_token_id", None)
    for e in (eos if isinstance(eos, (list, tuple)) else [eos]):
        if e is not None:
            ids.add(int(e))
    if not ids:
        raise ValueError("the tokenizer has no EOS token; rollouts need one to stop")
    return sorted(ids)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, step, micro-batch, tag): stable across processes."""
    return int(np.random.SeedSequence([int(p) % 2**32 for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _left_pad(prompt_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    P = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), P), pad_id, dtype=torch.long)
    att = torch.zeros((len(prompt_ids), P), dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
        att[i, P - len(p):] = 1
    return ids, att


def sample_next(logits: torch.Tensor, temperature: float, top_p: float,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One sampling step from [B, V] logits: (tokens [B], log softmax(z/T)[token] [B])."""
    logits = logits.float()
    if temperature == 0:
        logp = torch.log_softmax(logits, dim=-1)
        tok = logp.argmax(dim=-1, keepdim=True)
        return tok.squeeze(-1), logp.gather(-1, tok).squeeze(-1)
    logp = torch.log_softmax(logits / temperature, dim=-1)
    probs = logp.exp()
    if top_p < 1.0:
        sp, si = probs.sort(dim=-1, descending=True)
        drop = sp.cumsum(-1) - sp >= top_p  # keep the smallest prefix reaching top_p (never empty)
        choice = torch.multinomial(sp.masked_fill(drop, 0.0), 1, generator=generator)
        tok = si.gather(-1, choice)
    else:
        tok = torch.multinomial(probs, 1, generator=generator)
    return tok.squeeze(-1), logp.gather(-1, tok).squeeze(-1)


def _finish(tokens: list[torch.Tensor], logps: list[torch.Tensor], alive: list[torch.Tensor]):
    return torch.stack(tokens, 1), torch.stack(alive, 1), torch.stack(logps, 1)


def _cache_kwarg(model) -> str:
    """transformers 5.x calls the KV cache argument `cache`; 4.x called it `past_key_values`."""
    import inspect

    base = unwrap_peft(model)
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@BACKENDS.register("hf")
def hf_sample(model, prompt_ids, params: SamplingParams, seed: int, stop_ids, pad_id: int, device, precision: str):
    """Batched sampling loop over the transformers forward with a KV cache (left-padded prompts)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    ids, att = _left_pad(prompt_ids, pad_id)
    ids, att = ids.to(device), att.to(device)
    pos = (att.cumsum(-1) - 1).clamp_min(0)
    B = ids.shape[0]
    stop = torch.tensor(stop_ids, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    tokens, logps, alive = [], [], []
    cache_arg = _cache_kwarg(model)
    cache, cur, cur_pos = None, ids, pos
    for _ in range(params.max_new_tokens):
        with autocast(device, precision):
            out = model(input_ids=cur, attention_mask=att, position_ids=cur_pos, use_cache=True, logits_to_keep=1,
                        **({cache_arg: cache} if cache is not None else {}))
        cache = out.get("cache", None) if out.get("cache", None) is not None else out.get("past_key_values", None)
        tok, lp = sample_next(out.logits[:, -1, :], params.temperature, params.top_p, gen)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        tokens.append(tok)
        logps.append(torch.where(done, torch.zeros_like(lp), lp))
        alive.append(~done)
        done = done | torch.isin(tok, stop)
        if bool(done.all()):
            break
        att = torch.cat([att, torch.ones((B, 1), dtype=att.dtype, device=device)], dim=1)
        cur_pos = cur_pos[:, -1:] + 1
        cur = tok[:, None]
    return _finish(tokens, logps, alive)


@BACKENDS.register("generate")
def generate_sample(model, prompt_ids, params: SamplingParams, seed: int, stop_ids, pad_id: int, device, precision: str):
    """`model.generate` with the raw logits returned, turned into temperature-scaled log-probs."""
    ids, att = _left_pad(prompt_ids, pad_id)
    ids, att = ids.to(device), att.to(device)
    greedy = params.temperature == 0
    kwargs = {} if greedy else {"temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        with autocast(device, precision):
            out = model.generate(input_ids=ids, attention_mask=att, do_sample=not greedy, max_new_tokens=params.max_new_tokens,
                                 pad_token_id=pad_id, eos_token_id=list(stop_ids), output_logits=True,
                                 return_dict_in_generate=True, **kwargs)
    comp = out.sequences[:, ids.shape[1]:]
    T = comp.shape[1]
    logits = torch.stack(out.logits, 1)[:, :T].float()
    logp_all = torch.log_softmax(logits if greedy else logits / params.temperature, dim=-1)
    logp = logp_all.gather(-1, comp.unsqueeze(-1)).squeeze(-1)
    is_stop = torch.isin(comp, torch.tensor(stop_ids, device=device))
    # Alive up to and including the first stop token: no stop strictly before t.
    before = torch.cat([torch.zeros_like(is_stop[:, :1]), is_stop[:, :-1]], dim=1).long().cumsum(1) > 0
    mask = ~before
    return comp, mask, torch.where(mask, logp, torch.zeros_like(logp))


@torch.no_grad()
def sample(model, tokenizer, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, seed: int,
           device: torch.device | str = "cpu", precision: str = "fp32", backend: str = "hf",
           max_batch: int = 64) -> Rollouts:
    """`params.n` completions for each prompt (token ids, e.g. from `encode_prompts`).

    Runs in eval mode (no dropout) under `torch.no_grad`, restoring the model's mode after, in
    chunks of at most `max_batch` sequences (chunk c seeded with derive_seed(seed, c)).
    Same model, prompts, params and seed -> the same samples.
    """
    if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
        raise ValueError("sample() needs at least one prompt, none of them empty")
    device = torch.device(device)
    fn = BACKENDS.get(backend, field="objective.backend")
    stop_ids = stop_token_ids(tokenizer, model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    flat = [list(p) for p in prompt_ids for _ in range(params.n)]
    group = torch.arange(len(prompt_ids)).repeat_interleave(params.n)
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    parts = []
    try:
        for c, s in enumerate(range(0, len(flat), max_batch)):
            parts.append(fn(model, flat[s:s + max_batch], params, derive_seed(seed, c), stop_ids, pad_id, device, precision))
    finally:
        model.train(was_training)
    T = max(p[0].shape[1] for p in parts)

    def cat(i, fill):
        return torch.cat([torch.nn.functional.pad(p[i].cpu(), (0, T - p[i].shape[1]), value=fill) for p in parts])

    comp, mask, logp = cat(0, pad_id), cat(1, False).bool(), cat(2, 0.0).float()
    stop = torch.tensor(stop_ids)
    last = (mask.sum(1) - 1).clamp_min(0)
    finished = mask.any(1) & torch.isin(comp.gather(1, last[:, None]).squeeze(1), stop)
    texts = tokenizer.batch_decode([comp[i][mask[i]].tolist() for i in range(len(flat))], skip_special_tokens=True)
    return Rollouts(prompt_ids=flat, completion_ids=comp, completion_mask=mask, logprobs=logp, texts=texts,
                    group=group, finished=finished, seconds=time.perf_counter() - t0,
                    meta={"backend": backend, "seed": seed})


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

    def micro_batches(self, seed: int, step: int, per_step: int, n_micro: int) -> list[list[int]]:
        """The prompt indices of each of a step's `n_micro` micro-batches (sizes differ by at most 1)."""
        idx = self.indices(seed, step * per_step, per_step)
        bounds = np.linspace(0, per_step, n_micro + 1).round().astype(int)
        return [idx[bounds[m]:bounds[m + 1]] for m in range(n_micro)]


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
    if o.backend not in BACKENDS:
        raise ConfigError("backend", o.backend, f"allowed: {', '.join(BACKENDS.names())}{suggest(o.backend, BACKENDS)}")


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


def rollout_metrics(ro: Rollouts) -> dict:
    lengths = ro.lengths.float()
    return {"response_length": float(lengths.mean()), "truncated": float((~ro.finished).float().mean())}
