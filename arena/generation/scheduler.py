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

import time
from collections import deque
from dataclasses import dataclass

import torch

from arena.generation.native import NativeDecoder
from arena.generation.prefix import PrefixStore
from arena.generation.requests import Completion, GenRequest, Sampling, StopChecker, sample_tokens

DRAW = "inverse_cdf"  # requests.inverse_cdf_draw: torch.multinomial's law at ~1/20 of its cost


@dataclass
class SchedulerOptions:
    max_slots: int = 256  # sequences decoded together
    cache_mb: int = 2048  # KV-cache budget per bucket; fewer slots when long sequences need more
    prefill_tokens: int = 8192  # prompt tokens per prefill forward (bounds activation memory)
    solo_prefill: int = 256  # a prompt this long prefills alone: no padding, no mask, rows enough
    prefix_min: int = 32  # share a prompt prefix of at least this many tokens across requests (0 = off)
    prefix_cache_mb: int = 1024  # shared prefixes' keys/values held at once (prefix.py)


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

    def per_slot_bytes(self, capacity: int) -> int:
        return self.dec.kv_bytes_per_token() * capacity

    def slots_for(self, capacity: int, n: int) -> int:
        return max(1, min(self.opt.max_slots, n, int(self.opt.cache_mb * 2**20 // self.per_slot_bytes(capacity))))

    @torch.inference_mode()
    def run(self, requests: list[GenRequest], sampling: Sampling, stop: StopChecker,
            generator: torch.Generator) -> list[Completion]:
        need = [len(r.prompt_ids) + r.max_new_tokens for r in requests]
        if max(need) > self.dec.max_positions:
            raise ValueError(f"a prompt plus max_new_tokens is {max(need)} tokens, over the model's "
                             f"max_position_embeddings ({self.dec.max_positions})")
        order = sorted(range(len(requests)), key=lambda i: (-need[i], i))
        results: list[Completion | None] = [None] * len(requests)
        share = self.opt.prefix_min if self.dec.window is None else 0  # a window would cut the prefix
        self.prefixes = PrefixStore(self.dec, [r.prompt_ids for r in requests], share, self.opt.prefix_cache_mb)
        pending = deque(buckets(order, need))
        active: list[tuple[SlotBatch, deque]] = []
        # prefill_s / decode_s: where a call's time went (prompt forwards vs one-token steps)
        self.stats = {"buckets": len(pending), "peak_open": 0, "steps": 0, "rows": 0, "prefill_s": 0.0, "decode_s": 0.0}
        while pending or active:
            self._open(pending, active, requests, need)
            self.stats["peak_open"] = max(self.stats["peak_open"], len(active))
            for sb, queue in active:
                free = sb.free()
                # Admit when a quarter of the slots are free (or nothing runs): prefill in groups, not
                # one prompt per step, because a prefill forward is only efficient with many rows.
                if queue and free and (len(free) * 4 >= sb.size or not sb.live() or len(free) >= len(queue)):
                    t0 = time.perf_counter()
                    self._admit(sb, free, queue, requests, sampling, stop, generator, results)
                    self.stats["prefill_s"] += time.perf_counter() - t0
            active[:] = [(sb, q) for sb, q in active if q or sb.live()]  # a finished bucket frees its cache
            for sb, queue in active:
                if not queue and len(sb.live()) * 2 <= sb.size and sb.size > 1:
                    sb.compact(sb.live())
            live = [sb for sb, _ in active if sb.live()]
            if live:
                t0 = time.perf_counter()
                self._step(live, requests, sampling, stop, generator, results)
                self.stats["decode_s"] += time.perf_counter() - t0
                self.stats["steps"] += 1
                self.stats["rows"] += sum(sb.size for sb in live)
        return results  # type: ignore[return-value]

    def _open(self, pending: deque, active: list, requests, need) -> None:
        """Open length buckets while the KV budget and the slot cap allow (always one when none is
        open): buckets decode together in one forward, so short answers of one task fill the rows
        that a few long ones of another would leave idle."""
        while pending:
            bucket = pending[0]
            capacity = need[bucket[0]]
            used = sum(self.per_slot_bytes(sb.k[0].shape[2]) * sb.size for sb, _ in active)
            room = min(self.opt.max_slots - sum(sb.size for sb, _ in active),
                       (self.opt.cache_mb * 2**20 - used) // self.per_slot_bytes(capacity))
            slots = self.slots_for(capacity, len(bucket)) if not active else min(int(room), len(bucket))
            if active and slots < min(len(bucket), 16):
                return
            pending.popleft()
            max_new = max(requests[i].max_new_tokens for i in bucket)
            active.append((SlotBatch(self.dec, slots, capacity, max_new), deque(bucket)))

    def _admit(self, sb, free, queue, requests, sampling, stop, generator, results) -> None:
        take = []
        while queue and len(take) < len(free):
            take.append(queue.popleft())
        store = self.prefixes
        s = 0
        while s < len(take):  # groups bounded by the prompt tokens run (a shared prefix is not rerun)
            group, tokens = [], 0
            while s < len(take):
                i = take[s]
                n = len(requests[i].prompt_ids) - store.shared_length(i)
                if group and (tokens + n > self.opt.prefill_tokens or n >= self.opt.solo_prefill
                              or tokens >= self.opt.solo_prefill):
                    break
                group.append(i)
                tokens += n
                s += 1
            slots = free[: len(group)]
            free = free[len(group):]
            pre = store.prefixes_for(group)
            cut = [0 if p is None else p.length for p in pre]
            logits, kv = self.dec.prefill([requests[i].prompt_ids[c:] for i, c in zip(group, cut)], pre)
            for j, (slot, i) in enumerate(zip(slots, group)):
                n, c = len(requests[i].prompt_ids), cut[j]
                for layer, (k, v) in enumerate(kv):
                    if c:
                        sb.k[layer][slot, :, :c] = pre[j].k[layer]
                        sb.v[layer][slot, :, :c] = pre[j].v[layer]
                    sb.k[layer][slot, :, c:n] = k[j, :, : n - c]
                    sb.v[layer][slot, :, c:n] = v[j, :, : n - c]
                sb.lens[slot] = n
                sb.req[slot] = i
                sb.count[slot] = 0
                store.release(i)
            tok, lp = sample_tokens(logits, sampling, generator, draw=DRAW)
            self._accept(sb, slots, tok, lp, requests, stop, results)

    def _step(self, live: list[SlotBatch], requests, sampling, stop, generator, results) -> None:
        """One decode step of every slot of the open buckets in one forward: the matmuls see all rows,
        and each bucket's rows attend to its own cache (whole capacity, masked: a slice up to the
        longest live position is strided across slots and the batched matmul copied it every layer)."""
        dec = self.dec
        spans, lo = [], 0
        for sb in live:
            spans.append((lo, lo + sb.size))
            lo += sb.size
        pos = torch.cat([sb.lens for sb in live])
        masks = []
        for sb in live:
            keys = torch.arange(sb.k[0].shape[2], device=pos.device)[None, :]
            m = keys <= sb.lens[:, None]
            if dec.window is not None:
                m &= keys > sb.lens[:, None] - dec.window
            masks.append(m[:, None, None, :])
        rows = [torch.arange(sb.size, device=pos.device) for sb in live]

        def attend(i, q, k, v):
            out = []
            for sb, (a, b), r, m in zip(live, spans, rows, masks):
                sb.k[i][r, :, sb.lens] = k[a:b, :, 0]
                sb.v[i][r, :, sb.lens] = v[a:b, :, 0]
                out.append(dec.decode_attention(q[a:b], sb.k[i], sb.v[i], m))
            return out[0] if len(out) == 1 else torch.cat(out)

        hidden = dec.forward(torch.cat([sb.last for sb in live])[:, None], pos[:, None], attend)
        alive = [sb.live() for sb in live]
        for sb in live:
            sb.lens += 1
            idle = sb.free()
            if idle:  # a free slot's garbage row stays at position 0, never past the cache
                sb.lens[torch.tensor(idle, dtype=torch.long, device=sb.lens.device)] = 0
        idx = torch.tensor([a + s for (a, _), slots in zip(spans, alive) for s in slots], dtype=torch.long,
                           device=hidden.device)
        tok, lp = sample_tokens(dec.logits(hidden[idx, -1]), sampling, generator, draw=DRAW)
        j = 0
        for sb, slots in zip(live, alive):
            self._accept(sb, slots, tok[j: j + len(slots)], lp[j: j + len(slots)], requests, stop, results)
            j += len(slots)

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
