"""Which documents a `limit` scores: seeded, stratified by label, never lm-eval's first N.

PubMedQA's test file is sorted by label, so the first N documents would all be "yes". The subset is
chosen here and handed to lm-eval as `samples={task: [doc indices]}`.
"""

from __future__ import annotations

import math

from arena.data.io import stable_shuffle

MAX_STRATA = 20  # labels with more distinct values than this (free-text answers) are not strata


def per_subtask_limit(limit: int | None, n_subtasks: int) -> int | None:
    """A benchmark's `limit` split evenly over its subtasks, rounded up (at least 1 each)."""
    return None if limit is None else max(1, math.ceil(limit / n_subtasks))


def allocate(sizes: dict, n: int) -> dict:
    """Per-label quotas for a stratified subset of n: proportional (largest remainders), but every
    label gets at least one document when n >= the number of labels, so a small subset of
    PubMedQA (276 yes / 169 no / 55 maybe) still holds all three labels.

        q_l = floor(n·N_l/N), raised to 1 where 0; then the largest quotas give back the excess,
        or the largest fractional parts n·N_l/N − q_l take the remainder.
    Ties break by the larger group, then the label's text, never by dict order.
    """
    total = sum(sizes.values())
    quota = {lb: n * sz // total for lb, sz in sizes.items()}
    if n >= len(sizes):
        quota = {lb: max(1, q) for lb, q in quota.items()}
    while sum(quota.values()) > n:
        lb = max(quota, key=lambda k: (quota[k], sizes[k], str(k)))
        quota[lb] -= 1
    frac = sorted(sizes, key=lambda lb: (-(n * sizes[lb] / total - quota[lb]), -sizes[lb], str(lb)))
    i = 0
    while sum(quota.values()) < n:
        lb = frac[i % len(frac)]
        if quota[lb] < sizes[lb]:
            quota[lb] += 1
        i += 1
    return quota


def select_indices(docs, strata, n: int | None, seed_key: str) -> list[int]:
    """Seeded subset of document indices, stratified by `strata(doc)` when it is a small label set
    (`allocate`), else a seeded random sample. Never the first n: files like PubMedQA's test set
    are sorted by label. Sorted, so lm-eval reports them in file order; all when n is None/too big.
    """
    total = len(docs)
    idx = list(range(total))
    if n is None or n >= total:
        return idx
    shuffled = stable_shuffle(idx, seed_key)
    labels = [repr(strata(docs[i])) for i in idx] if strata else None
    if labels is None or not 1 < len(set(labels)) <= MAX_STRATA:
        return sorted(shuffled[:n])
    sizes: dict = {}
    for lb in labels:
        sizes[lb] = sizes.get(lb, 0) + 1
    quota = allocate(sizes, n)
    chosen = []
    for i in shuffled:
        if quota[labels[i]] > 0:
            quota[labels[i]] -= 1
            chosen.append(i)
    return sorted(chosen)
