"""Prompt prefixes shared by several requests, prefilled once (what vLLM calls prefix caching).

Few-shot evaluation repeats one long prefix across many documents: a BBH subtask's three worked
examples (~600 tokens) precede each of its questions (~100), so without sharing ~85% of BBH's prefill
recomputes keys and values already computed for the previous document. GRPO's G samples of one
prompt repeat the whole prompt. `shared_prefixes` finds, among one call's prompts, the runs that share
at least `min_shared` leading tokens; `PrefixStore` prefills each such prefix once, hands its per-layer
keys/values to the members' suffix prefills (`NativeDecoder.prefill(..., prefixes=...)`), and frees
it when its last member has been admitted.

The keys and values of a prefix do not depend on what follows it (causal attention), so in exact
arithmetic a member's completion is the same with or without sharing; in floating point the prefix is
computed in a different batch shape, which changes low bits as any batch-size change does (fp32
greedy completions stay token-identical to `model.generate`, tests/test_generation_prefix.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def shared_prefixes(prompts: list[list[int]], min_shared: int) -> tuple[list[int], list[int]]:
    """(group id per prompt, -1 = no shared prefix; prefix length per group).

    Prompts are sorted lexicographically; a run of neighbours whose every adjacent common prefix is
    >= min_shared forms a group, and for sorted sequences the prefix common to the whole run is the
    minimum of those adjacent common prefixes. It is capped one token short of the group's shortest
    prompt, so every member still prefills at least its last token (whose logits start decoding).
    Groups whose capped prefix is shorter than min_shared, or with one member, are dropped.
    """
    if min_shared <= 0 or len(prompts) < 2:
        return [-1] * len(prompts), []
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    runs: list[tuple[list[int], int]] = []
    run, shared = [order[0]], None
    for prev, cur in zip(order, order[1:]):
        lcp = common_prefix(prompts[prev], prompts[cur])
        if lcp >= min_shared:
            run.append(cur)
            shared = lcp if shared is None else min(shared, lcp)
        else:
            runs.append((run, shared or 0))
            run, shared = [cur], None
    runs.append((run, shared or 0))
    group = [-1] * len(prompts)
    lengths: list[int] = []
    for members, n in runs:
        n = min(n, min(len(prompts[i]) for i in members) - 1)
        if len(members) < 2 or n < min_shared:
            continue
        for i in members:
            group[i] = len(lengths)
        lengths.append(n)
    return group, lengths


@dataclass
class PrefixKV:
    """One prefilled prefix: its length and per-layer keys/values [n_kv, length, head_dim]."""

    length: int
    k: list[torch.Tensor]
    v: list[torch.Tensor]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))


@dataclass
class PrefixStore:
    """The shared prefixes of one generate call: prefilled on first use, freed after the last member.

    `budget_mb` bounds the keys/values held at once; a group that does not fit when first needed is
    not cached and its members prefill in full (correct, only slower).
    """

    dec: object  # NativeDecoder
    prompts: list[list[int]]
    min_shared: int = 32
    budget_mb: int = 1024
    group: list[int] = field(init=False)
    lengths: list[int] = field(init=False)
    stats: dict = field(init=False)

    def __post_init__(self):
        self.group, self.lengths = shared_prefixes(self.prompts, self.min_shared)
        self._left = [0] * len(self.lengths)  # members not yet admitted, per group
        for g in self.group:
            if g >= 0:
                self._left[g] += 1
        self._kv: dict[int, PrefixKV] = {}
        self._skip: set[int] = set()
        self._held = 0
        self.stats = {"groups": len(self.lengths), "prefill_tokens": 0, "saved_tokens": 0, "uncached_groups": 0}

    def _budget_left(self) -> int:
        return self.budget_mb * 2**20 - self._held

    def shared_length(self, i: int) -> int:
        """Tokens of request i's prompt that a shared prefix covers (0 if none or not cached)."""
        g = self.group[i]
        return 0 if g < 0 or g in self._skip else self.lengths[g]

    def prefixes_for(self, idx: list[int]) -> list[PrefixKV | None]:
        """The cached prefix of each request in idx (None where it has none), prefilling the
        groups first needed here in one batch."""
        need = sorted({self.group[i] for i in idx if self.group[i] >= 0} - set(self._kv) - self._skip)
        fit = []
        for g in need:
            size = self.lengths[g] * self.dec.kv_bytes_per_token()
            if size <= self._budget_left():
                fit.append(g)
                self._held += size
            else:
                self._skip.add(g)
                self.stats["uncached_groups"] += 1
        if fit:
            rep = {self.group[i]: i for i in reversed(range(len(self.prompts))) if self.group[i] in fit}
            _, kv = self.dec.prefill([self.prompts[rep[g]][: self.lengths[g]] for g in fit])
            for j, g in enumerate(fit):
                n = self.lengths[g]
                self._kv[g] = PrefixKV(n, [k[j, :, :n].clone() for k, _ in kv], [v[j, :, :n].clone() for _, v in kv])
                self.stats["prefill_tokens"] += n
        out = []
        for i in idx:
            p = self._kv.get(self.group[i])
            out.append(p)
            if p is not None:
                self.stats["saved_tokens"] += p.length
        return out

    def release(self, i: int) -> None:
        """Request i has been admitted: free its group's prefix after the last member."""
        g = self.group[i]
        if g < 0:
            return
        self._left[g] -= 1
        if self._left[g] == 0 and g in self._kv:
            self._held -= self._kv.pop(g).nbytes
