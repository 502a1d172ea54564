"""Held-out probes of a target, run before and after training (`probe:` in the run config).

Cheap and low-variance where benchmark accuracy sits at the floor (135M on CPU):
- held-out NLL: mean per-token negative log-likelihood of held-out reference responses
  (the plasticity axis of a CPU run; docs/design.md "Pilot");
- greedy accuracy: greedy-decode held-out prompts and compare the final answer, read the way the
  target's `answer_format` says.
"""

from __future__ import annotations

import math

from arena.evaluation.model_io import greedy_generate, per_example_nll
from arena.targets.answers import ANSWER_FORMATS, answers_match


def heldout_nll(model, tokenizer, examples, device, precision: str, seq_len: int = 512, batch_size: int = 8) -> dict:
    """Mean per-token NLL of the reference responses given the prompts, with the standard error
    over examples (each example's mean NLL is one observation)."""
    items = [x for x in per_example_nll(model, tokenizer, examples, device, precision, seq_len, batch_size) if x]
    per_example = [total / max(1, n) for total, n in items]
    n_tok = sum(n for _, n in items)
    k = len(per_example)
    mean = sum(per_example) / k
    se = math.sqrt(sum((x - mean) ** 2 for x in per_example) / (k * (k - 1))) if k > 1 else float("nan")
    return {"nll": sum(t for t, _ in items) / max(1, n_tok), "nll_example_mean": mean, "se": se, "n": k, "tokens": n_tok}


def greedy_accuracy(model, tokenizer, examples, device, precision: str, answer_format: str,
                    max_new_tokens: int = 32) -> dict:
    """Share of held-out examples whose greedy reply's final answer (read by the target's
    `answer_format`) equals the reference, with the binomial SE sqrt(acc(1-acc)/k)."""
    with_answers = [e for e in examples if e.answer is not None]
    if not with_answers:
        return {}
    texts = greedy_generate(model, tokenizer, [e.prompt for e in with_answers], device, precision, max_new_tokens)
    read = ANSWER_FORMATS.get(answer_format, field="answer_format")
    correct = [answers_match(read(t), e.answer) for t, e in zip(texts, with_answers)]
    k = len(correct)
    acc = sum(correct) / k
    # per_example (1/0 in the examples' order) lets a before/after comparison on the same problems
    # use the paired SE (arena.results.objectives.paired_gain), far tighter than two binomial SEs
    return {"accuracy": acc, "se": math.sqrt(acc * (1 - acc) / k), "n": k, "max_new_tokens": max_new_tokens,
            "per_example": [int(c) for c in correct],
            "samples": [{"prompt": e.prompt, "output": t, "answer": e.answer, "correct": c}
                        for e, t, c in list(zip(with_answers, texts, correct))[:5]]}
