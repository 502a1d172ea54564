"""Continuous batching over the native decoder: a fixed set of KV-cache slots, refilled as
sequences finish, so a short answer never waits for a long one and the batch stays full.

Requests are ordered by their need (prompt + max new tokens), longest first, and cut into length
buckets whose need is within 2× of the bucket's longest (so a cache sized for the longest wastes at
most half its positions). Inside a bucket: S slots, each with its own length; a decode step runs all
S slots as one batch (one new token each, written at the slot's own position), finished slots are
refilled by prefilling queued prompts in groups, and when the queue is empty the cache is compacted to
the live slots. Matmul throughput on a 2-core CPU grows ~4× from 32 to 256 rows in bf16
(benchmarks/bench_generation.py), which is why the slot count, not lm-eval's batch size, sets the batch.

Determinism: the sampled tokens depend on the call's seed and its requests only (one generator per
call, consumed in a fixed order), so the same requests and seed give the same completions.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from arena.generation.native import NativeDecoder
from arena.generation.requests import Completion, GenRequest, Sampling, StopChecker, sample_tokens


@dataclass
class SchedulerOptions:
    max_slots: int = 256  # sequences decoded together
    cache_mb: int = 2048  # KV-cache budget per bucket; fewer slots when long sequences need more
    prefill_tokens: int = 8192  # prompt tokens per prefill forward (bounds activation memory)


def buckets(order: list[int], need: list[int]) -> list[list[int]]:
    """Cut indices (sorted by need, descending) into runs whose need is > half the run's first."""
    out: list[list[int]] = []
    for i in order:
        if out and need[i] * 2 > need[out[-1][0]]:
            out[-1].append(i)
        else:
            out.append([i])
    return out


class SlotBatch:
    """The KV cache of S slots for one bucket and the per-slot decoding state."""

    def __init__(self, dec: NativeDecoder, slots: int, capacity: int, max_new: int):
        dev, dt = dec.device, dec.dtype
        shape = (slots, dec.n_kv, capacity, dec.head_dim)
        self.k = [torch.zeros(shape, dtype=dt, device=dev) for _ in dec.layers]
        self.v = [torch.zeros(shape, dtype=dt, device=dev) for _ in dec.layers]
        self.lens = torch.zeros(slots, dtype=torch.long, device=dev)  # tokens in the cache
        self.last = torch.zeros(slots, dtype=torch.long, device=dev)  # token to feed next
        self.req = [-1] * slots  # request index per slot, -1 = free
        self.tokens = torch.zeros((slots, max_new), dtype=torch.long)
        self.logps = torch.zeros((slots, max_new), dtype=torch.float32)
        self.count = torch.zeros(slots, dtype=torch.long)  # generated tokens per slot

    @property
    def size(self) -> int:
        return len(self.req)

    def free(self) -> list[int]:
        return [s for s, r in enumerate(self.req) if r < 0]

    def live(self) -> list[int]:
        return [s for s, r in enumerate(self.req) if r >= 0]

    def compact(self, keep: list[int]) -> None:
        idx = torch.tensor(keep, dtype=torch.long, device=self.lens.device)
        self.k = [c.index_select(0, idx) for c in self.k]
        self.v = [c.index_select(0, idx) for c in self.v]
        self.lens, self.last = self.lens[idx], self.last[idx]
        cpu = idx.cpu()
        self.tokens, self.logps, self.count = self.tokens[cpu], self.logps[cpu], self.count[cpu]
        self.req = [self.req[s] for s in keep]


class Scheduler:
    def __init__(self, dec: NativeDecoder, options: SchedulerOptions | None = None):
        self.dec = dec
        self.opt = options or SchedulerOptions()

    def slots_for(self, capacity: int, n: int) -> int:
        per_slot = 2 * len(self.dec.layers) * self.dec.n_kv * self.dec.head_dim * capacity * self.dec.dtype.itemsize
        return max(1, min(self.opt.max_slots, n, int(self.opt.cache_mb * 2**20 // per_slot)))

    @torch.inference_mode()
    def run(self, requests: list[GenRequest], sampling: Sampling, stop: StopChecker,
            generator: torch.Generator) -> list[Completion]:
        need = [len(r.prompt_ids) + r.max_new_tokens for r in requests]
        order = sorted(range(len(requests)), key=lambda i: (-need[i], i))
        results: list[Completion | None] = [None] * len(requests)
        for bucket in buckets(order, need):
            self._run_bucket(bucket, requests, need, sampling, stop, generator, results)
        return results  # type: ignore[return-value]

    def _run_bucket(self, bucket, requests, need, sampling, stop, generator, results) -> None:
        capacity = need[bucket[0]]
        if capacity > self.dec.max_positions:
            raise ValueError(f"a prompt plus max_new_tokens is {capacity} tokens, over the model's "
                             f"max_position_embeddings ({self.dec.max_positions})")
        max_new = max(requests[i].max_new_tokens for i in bucket)
        sb = SlotBatch(self.dec, self.slots_for(capacity, len(bucket)), capacity, max_new)
        queue = deque(bucket)
        while queue or sb.live():
            free = sb.free()
            # Admit when a quarter of the slots are free (or nothing runs): prefill in groups, not
            # one prompt per step, because a prefill forward is only efficient with many rows.
            if queue and free and (len(free) * 4 >= sb.size or not sb.live() or len(free) >= len(queue)):
                self._admit(sb, free, queue, requests, sampling, stop, generator, results)
                continue
            if not queue and len(sb.live()) * 2 <= sb.size and sb.size > 1:
                sb.compact(sb.live())
            self._step(sb, requests, sampling, stop, generator, results)

    def _admit(self, sb, free, queue, requests, sampling, stop, generator, results) -> None:
        take = []
        while queue and len(take) < len(free):
            take.append(queue.popleft())
        s = 0
        while s < len(take):  # groups bounded by prefill_tokens
            group, tokens = [], 0
            while s < len(take) and (not group or tokens + len(requests[take[s]].prompt_ids) <= self.opt.prefill_tokens):
                group.append(take[s])
                tokens += len(requests[take[s]].prompt_ids)
                s += 1
            slots = free[: len(group)]
            free = free[len(group):]
            logits, kv = self.dec.prefill([requests[i].prompt_ids for i in group])
            for j, (slot, i) in enumerate(zip(slots, group)):
                n = len(requests[i].prompt_ids)
                for layer, (k, v) in enumerate(kv):
                    sb.k[layer][slot, :, :n] = k[j, :, :n]
                    sb.v[layer][slot, :, :n] = v[j, :, :n]
                sb.lens[slot] = n
                sb.req[slot] = i
                sb.count[slot] = 0
            tok, lp = sample_tokens(logits, sampling, generator)
            self._accept(sb, slots, tok, lp, requests, stop, results)

    def _step(self, sb, requests, sampling, stop, generator, results) -> None:
        dec = self.dec
        S = sb.size
        rows = torch.arange(S, device=sb.lens.device)
        pos = sb.lens.clone()
        width = int(pos.max()) + 1
        keys = torch.arange(width, device=pos.device)[None, :]
        mask = keys <= pos[:, None]
        if dec.window is not None:
            mask &= keys > pos[:, None] - dec.window
        mask = mask[:, None, None, :]

        def write(i, k, v):
            sb.k[i][rows, :, pos] = k[:, :, 0]
            sb.v[i][rows, :, pos] = v[:, :, 0]

        def read(i, k, v):
            return sb.k[i][:, :, :width], sb.v[i][:, :, :width]

        hidden = dec.forward(sb.last[:, None], pos[:, None], mask, write, read)
        live = sb.live()
        sb.lens += 1
        idle = sb.free()
        if idle:  # a free slot's garbage row stays at position 0, never past the cache
            sb.lens[torch.tensor(idle, dtype=torch.long, device=sb.lens.device)] = 0
        idx = torch.tensor(live, dtype=torch.long, device=hidden.device)
        tok, lp = sample_tokens(dec.logits(hidden[idx, -1]), sampling, generator)
        self._accept(sb, live, tok, lp, requests, stop, results)

    def _accept(self, sb, slots, tok, lp, requests, stop, results) -> None:
        """Record one new token per slot in `slots`; finish slots that hit a stop or their cap."""
        tok_cpu, lp_cpu = tok.cpu(), lp.cpu()
        sl = torch.tensor(slots, dtype=torch.long)
        sb.tokens[sl, sb.count[sl]] = tok_cpu
        sb.logps[sl, sb.count[sl]] = lp_cpu
        sb.count[sl] += 1
        sb.last[sl.to(sb.last.device)] = tok.to(sb.last.device)
        is_stop_id = stop.is_stop_id(tok_cpu)
        maybe_text = stop.may_end_string(tok_cpu)
        for j, slot in enumerate(slots):
            i = sb.req[slot]
            n = int(sb.count[slot])
            reason = None
            if is_stop_id[j]:
                reason = "stop"
            elif maybe_text[j] and stop.hits_string(sb.tokens[slot, :n].tolist(), requests[i].stop_strings):
                reason = "stop_string"
            elif n >= requests[i].max_new_tokens:
                reason = "length"
            if reason is not None:
                results[i] = Completion(token_ids=sb.tokens[slot, :n].tolist(), logprobs=sb.logps[slot, :n].tolist(),
                                        finish_reason=reason)
                sb.req[slot] = -1
                sb.lens[slot] = 0
