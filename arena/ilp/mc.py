"""The multiple-choice form of a training sample (ILP §3.1), scored by log-likelihood: no generation.

A sample's reference answer is the correct option; the distractors are other training samples'
answers from the same subset (`meta["source"]`), so they are plausible for its prompt (a MedMCQA
letter among letters, a PubMedQA yes/no/maybe among those, an arithmetic result among results).
Only the answer is scored, not the explanation before it: an option is the response's last line
that states the answer, with the answer swapped ("The answer is B." -> "The answer is C.";
"12 + 5 = 17" -> "12 + 5 = 43"), so every option shares the prompt and the template and differs
only where the answer does. A target without verifiable answers (`Example.answer` None) offers
whole responses as options (the paper's free-form conversion).

Per sample, `candidates` distinct options (the reference first) are scored once under each model;
pass@N is the share of N trials, each drawing `options - 1` distractors from them (seeded), whose
highest log-likelihood option is the reference. The softmax over all candidates is the sample's
answer distribution (cause II compares the base's with the tuned model's).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from arena.errors import ArenaError


def answer_of(ex) -> str:
    """What an option stands for: the verifiable answer, else the whole response."""
    return ex.answer if ex.answer is not None else ex.response


def _answer_re(answer: str) -> re.Pattern:
    # the answer as a token of its own: "12" in "12 + 0 = 12" matches at the end, never inside "112"
    return re.compile(r"(?<![\w.])" + re.escape(answer) + r"(?![\w])")


def continuation(ex, answer: str) -> str:
    """The option text for `answer`: the response's last line stating ex.answer, answer swapped in
    (the lines after it kept); the bare answer when the response never states it; for free-form
    samples (no ex.answer) the option is `answer` itself, a whole response."""
    if ex.answer is None:
        return answer
    lines = ex.response.split("\n")
    pat = _answer_re(ex.answer)
    for i in range(len(lines) - 1, -1, -1):
        hits = list(pat.finditer(lines[i]))
        if hits:
            m = hits[-1]
            line = lines[i][: m.start()] + answer + lines[i][m.end():]
            return "\n".join([line] + lines[i + 1:])
    return answer


@dataclass
class McItem:
    """One sample's MC form: the candidate answers (reference first) and their option texts."""

    prompt: str
    answers: list[str]
    texts: list[str]
    trials: list[list[int]]  # per trial, the candidate indices offered (0 = the reference among them)


def distractor_pools(examples) -> dict[str, list[str]]:
    """source -> the distinct answers of that subset's samples, in first-seen order."""
    pools: dict[str, dict[str, None]] = {}
    for ex in examples:
        pools.setdefault(str(ex.meta.get("source", "")), {})[answer_of(ex)] = None
    return {k: list(v) for k, v in pools.items()}


def build_items(tested, pools: dict[str, list[str]], candidates: int, options: int, n: int, seed: int,
                keys: list[str]) -> list[McItem]:
    """The MC form of each tested sample (seeded by `seed` and the sample's key, so the same sample
    gets the same options in every run that is compared). ArenaError when a sample has no distractor."""
    items = []
    for ex, key in zip(tested, keys):
        ref = answer_of(ex)
        pool = [a for a in pools.get(str(ex.meta.get("source", "")), []) if a != ref]
        if not pool:
            raise ArenaError(f"ilp: sample {ex.prompt[:60]!r} has no multiple-choice distractor: every sample of its "
                             f"subset {ex.meta.get('source')!r} has the answer {ref!r}; this target is not "
                             "MC-convertible (use probe: verify if it has a reward)")
        rng = random.Random(f"ilp/mc/{seed}/{key}")
        distract = rng.sample(pool, min(candidates - 1, len(pool)))
        answers = [ref] + distract
        k = min(options, len(answers)) - 1
        trials = [[0] + sorted(rng.sample(range(1, len(answers)), k)) for _ in range(n)]
        items.append(McItem(ex.prompt, answers, [continuation(ex, a) for a in answers], trials))
    return items


def score_items(model, tokenizer, items: list[McItem], device, precision: str, batch_size: int,
                seq_len: int = 4096) -> list[list[float]]:
    """Log-likelihood log P(option text | prompt) of every candidate of every item, one model."""
    from types import SimpleNamespace

    from arena.evaluation.model_io import per_example_nll

    flat = [(i, j, SimpleNamespace(prompt=it.prompt, response=t)) for i, it in enumerate(items)
            for j, t in enumerate(it.texts)]
    # longest first: fewer padded tokens per forward, and the first batch shows the memory peak
    order = sorted(range(len(flat)), key=lambda r: -(len(flat[r][2].prompt) + len(flat[r][2].response)))
    scored = per_example_nll(model, tokenizer, [flat[r][2] for r in order], device, precision, seq_len, batch_size)
    out = [[-math.inf] * len(it.texts) for it in items]
    for r, s in zip(order, scored):
        i, j, _ = flat[r]
        if s is not None:
            out[i][j] = -s[0]
    return out


def softmax(logliks: list[float]) -> list[float]:
    m = max(logliks)
    if m == -math.inf:
        return [1.0 / len(logliks)] * len(logliks)
    e = [math.exp(x - m) for x in logliks]
    z = sum(e)
    return [x / z for x in e]


def mc_pass(item: McItem, logliks: list[float]) -> float:
    """Share of the item's trials whose highest-likelihood offered option is the reference (index 0);
    a tie with the reference counts as wrong (a model that cannot tell them apart has not learned it)."""
    wins = 0
    for offered in item.trials:
        best = max(logliks[j] for j in offered if j != 0)
        wins += logliks[0] > best
    return wins / len(item.trials)
