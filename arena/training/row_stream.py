"""Which packed rows each SFT micro-batch reads: the row stream, its order, reversal and bucketing.

Row i of the infinite stream is row perm_e[i % N] of epoch e = i // N, and micro-batch m of step s
reads stream positions [(s·A + m)·B, (s·A + m + 1)·B) (A = grad_accum, B = batch_size). Each
epoch's permutation is computed from (seed, e) alone, so any step's rows are known without
replaying the stream: resume needs no data state and every method of a sweep sees the same rows.

- shuffled (default): perm_e = default_rng([seed, e]).permutation(N), the stock stream.
- given: perm_e = identity (rows in the target's example order, every epoch).
- reverse: step s, micro-batch m reads what step steps-1-s, micro-batch A-1-m would have, rows
  back to front: the whole run's stream played backwards (cause IV's reversed-order control).
- conflicts (bucketing): each epoch's permutation is repaired by deterministic swaps so that no
  micro-batch holds two rows with members of one conflict group. The straddling micro-batch at an
  epoch boundary is checked against the previous epoch's tail, so epoch e depends on e-1 (cached).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RowStream:
    n_rows: int
    batch_size: int
    grad_accum: int
    steps: int
    seed: int
    shuffle: bool = True
    reverse: bool = False
    row_groups: list[frozenset] | None = None  # per row: conflict group ids it holds (bucketing)
    repairs: int = 0  # swaps made so far (over the epochs computed)
    unresolved: int = 0  # micro-batches left with a shared group (no swap could fix them)
    _perms: dict = field(default_factory=dict, repr=False)

    def _base_perm(self, e: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n_rows)
        return np.random.default_rng([self.seed, int(e)]).permutation(self.n_rows)

    def epoch_perm(self, e: int) -> np.ndarray:
        if self.row_groups is None:
            return self._base_perm(e)
        for k in range(e + 1):  # in order: epoch k's first block is checked against k-1's tail
            if k not in self._perms:
                self._perms[k] = self._repair(k)
        return self._perms[e]

    def _repair(self, e: int) -> np.ndarray:
        """perm_e with swaps so every micro-batch's rows hold disjoint group sets.

        Blocks are the micro-batches as they fall on the stream (offset e·N mod B). Walking the
        positions in order, a row clashing with its block's earlier rows is swapped with the
        nearest later position whose row does not clash (its old place is checked when the walk
        reaches it); failing that, with an earlier position of another block where both fit.
        """
        N, B, groups = self.n_rows, self.batch_size, self.row_groups
        perm = self._base_perm(e).copy()
        offset = (e * N) % B
        prev_tail = []  # rows of the previous epoch in the straddling first block
        if e > 0 and offset:
            prev_tail = list(self.epoch_perm(e - 1)[N - offset:])

        def block_of(p: int) -> tuple[int, int]:
            start = ((p + offset) // B) * B - offset
            return max(start, 0), min(start + B, N)

        def held(p: int) -> set:  # groups of p's block, p itself left out
            s, t = block_of(p)
            out = set()
            for q in range(s, t):
                if q != p:
                    out |= groups[perm[q]]
            if s == 0:
                for r in prev_tail:
                    out |= groups[r]
            return out

        for p in range(N):
            g = groups[perm[p]]
            if not g:
                continue
            s, _ = block_of(p)
            before = set().union(*(groups[perm[q]] for q in range(s, p))) if p > s else set()
            if s == 0:
                for r in prev_tail:
                    before |= groups[r]
            if not (g & before):
                continue
            fixed = False
            for q in range(p + 1, N):  # later rows: only the rows before p in this block must be avoided
                if not (groups[perm[q]] & before):
                    perm[p], perm[q] = perm[q], perm[p]
                    fixed = True
                    break
            if not fixed:
                for q in range(s):  # an earlier block: both rows must fit where they land
                    if not (groups[perm[q]] & before) and not (g & held(q)):
                        perm[p], perm[q] = perm[q], perm[p]
                        fixed = True
                        break
            self.repairs += fixed
            self.unresolved += not fixed
        return perm

    def forward_rows(self, step: int, micro: int) -> np.ndarray:
        B, N = self.batch_size, self.n_rows
        start = (step * self.grad_accum + micro) * B
        idx = np.arange(start, start + B)
        out = np.empty(B, dtype=np.int64)
        for e in np.unique(idx // N):
            sel = idx // N == e
            out[sel] = self.epoch_perm(int(e))[idx[sel] % N]
        return out

    def rows(self, step: int, micro: int) -> np.ndarray:
        """Row indices of micro-batch `micro` of optimizer step `step` (0-based)."""
        if self.reverse:
            return self.forward_rows(self.steps - 1 - step, self.grad_accum - 1 - micro)[::-1].copy()
        return self.forward_rows(step, micro)
