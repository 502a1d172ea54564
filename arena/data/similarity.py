"""Prompt similarity for the incomplete-learning analysis and SFT bucketing: sparse TF-IDF cosines.

Texts become TF-IDF vectors over word unigrams and bigrams; a "word" is any run of word characters
(`\\b\\w+\\b`) or any single other non-space character, so a single digit, letter or operator
counts: "3 + 4" and "3 + 5" differ, and so do "12 + 5" and "12 - 5" (with words only, those two are
the same text and every arithmetic pair a, b would look like a conflict). With sublinear tf and
l2-normalised rows,

    w(t, d) = (1 + ln tf(t, d)) · idf(t),   idf(t) = ln((1 + n) / (1 + df(t))) + 1,
    cos(a, b) = Σ_t w(t, a) w(t, b) / (‖w(·, a)‖ ‖w(·, b)‖),

in [0, 1] (weights are non-negative). The vocabulary and idf are fitted on all texts compared, and
products are taken in row chunks, so n = 4000+ prompts never build a dense n × n matrix.
`conflict_groups` is what SFT's `bucketing: conflicts` (arena/objectives/sft.py) and the ILP's
cause III read: the same functions, so both see the same groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from sklearn.feature_extraction.text import TfidfVectorizer

TOKEN_PATTERN = r"(?u)\b\w+\b|[^\w\s]"
CHUNK = 512  # rows of the left operand per sparse product: bounds memory at CHUNK × n


def _vectors(texts_a: Sequence[str], texts_b: Sequence[str] | None) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    vec = TfidfVectorizer(ngram_range=(1, 2), token_pattern=TOKEN_PATTERN, sublinear_tf=True, lowercase=True)
    texts_a = list(texts_a)
    both = texts_a + (list(texts_b) if texts_b is not None else [])
    try:
        X = vec.fit_transform(both).tocsr()
    except ValueError:  # no word at all in any text (empty strings): every cosine is 0
        X = sp.csr_matrix((len(both), 1))
    return X[: len(texts_a)], (X[len(texts_a):] if texts_b is not None else X)


def prompt_similarity(texts_a: Sequence[str], texts_b: Sequence[str] | None = None) -> sp.csr_matrix:
    """Sparse [len(a), len(b)] matrix of TF-IDF cosines cos(a_i, b_j) (b = a when omitted).

    Only pairs sharing a term are stored; use it for small sets or one row block, and
    `near_duplicates` for all-pairs thresholding of large sets.
    """
    A, B = _vectors(texts_a, texts_b)
    return (A @ B.T).tocsr()


def near_duplicates(texts: Sequence[str], threshold: float,
                    others: Sequence[str] | None = None) -> list[tuple[int, int, float]]:
    """Pairs with cos ≥ threshold, as (i, j, cos) sorted by (i, j).

    Without `others`: pairs within `texts` with i < j. With `others`: i indexes `texts`, j indexes
    `others` (every pair, e.g. held-out prompts against the train prompts). A tiny tolerance
    (1e-9) keeps identical texts at threshold 1.0 despite float rounding.
    """
    A, B = _vectors(texts, others)
    BT = B.T.tocsc()
    out: list[tuple[int, int, float]] = []
    for s in range(0, A.shape[0], CHUNK):
        block = (A[s : s + CHUNK] @ BT).tocoo()
        keep = block.data >= threshold - 1e-9
        rows, cols, vals = block.row[keep] + s, block.col[keep], block.data[keep]
        if others is None:
            upper = cols > rows
            rows, cols, vals = rows[upper], cols[upper], vals[upper]
        out.extend(zip(rows.tolist(), cols.tolist(), np.minimum(vals, 1.0).tolist()))
    out.sort(key=lambda t: (t[0], t[1]))
    return out


def _label(ex) -> str:
    answer = getattr(ex, "answer", None)
    return str(answer if answer is not None else ex.response).strip()


def conflict_groups(examples: Sequence, threshold: float = 0.9) -> list[list[int]]:
    """Groups of examples whose prompts are near duplicates (cos ≥ threshold) but whose targets
    differ (`answer`, else `response`, compared after strip).

    The graph has an edge i–j for each such conflicting pair; a group is a connected component
    with ≥ 2 members (scipy.sparse.csgraph.connected_components), so two identical prompts with
    the same answer are no conflict, but they join a group when both conflict with a third.
    Groups are sorted lists of indices into `examples`, ordered by their first member.
    """
    n = len(examples)
    labels = [_label(e) for e in examples]
    edges = [(i, j) for i, j, _ in near_duplicates([e.prompt for e in examples], threshold)
             if labels[i] != labels[j]]
    if not edges:
        return []
    i, j = np.array(edges).T
    graph = sp.coo_matrix((np.ones(len(edges)), (i, j)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    members = sorted(set(i.tolist()) | set(j.tolist()))
    groups: dict[int, list[int]] = {}
    for m in members:
        groups.setdefault(int(comp[m]), []).append(m)
    return sorted((g for g in groups.values() if len(g) >= 2), key=lambda g: g[0])
