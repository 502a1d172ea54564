"""Cheap, low-variance probes that work when benchmark accuracy sits at the floor (135M on CPU).

- target NLL: mean per-token negative log-likelihood of held-out reference responses
  (the plasticity axis of a CPU run; DESIGN.md "Pilot");
- greedy accuracy: greedy-decode held-out prompts and compare the final answer.
"""

from __future__ import annotations

import math
import re

import torch

from arena.objectives.losses import causal_lm_loss_sum
from arena.training.device import autocast
from arena.training.packing import chat_texts

_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_LETTER = re.compile(r"answer is:?\s*\(?([A-E])\b|\b([A-E])[.)]?\s*$")


def extract_answer(text: str, like: str | None) -> str | None:
    """The final answer in `text`, shaped like the reference `like` (option letter, yes/no/maybe, or number)."""
    text = text.strip()
    if like is not None and like in ("A", "B", "C", "D", "E"):
        m = None
        for m in _LETTER.finditer(text):
            pass
        return (m.group(1) or m.group(2)) if m else None
    if like is not None and like.lower() in ("yes", "no", "maybe"):
        words = re.findall(r"\b(yes|no|maybe)\b", text.lower())
        return words[-1] if words else None
    nums = _NUM.findall(text)
    return nums[-1].replace(",", "").rstrip(".") if nums else None


def answers_match(pred: str | None, ref: str) -> bool:
    if pred is None:
        return False
    try:
        return math.isclose(float(pred), float(ref.replace(",", "")), rel_tol=0, abs_tol=1e-6)
    except ValueError:
        return pred.strip().lower() == ref.strip().lower()


def target_nll(model, tokenizer, examples, device, precision: str, seq_len: int = 512, batch_size: int = 8) -> dict:
    """Mean per-token NLL of the reference responses given the prompts, with the standard error
    over examples (each example's mean NLL is one observation)."""
    items = [x for x in per_example_nll(model, tokenizer, examples, device, precision, seq_len, batch_size) if x]
    per_example = [total / max(1, n) for total, n in items]
    n_tok = sum(n for _, n in items)
    k = len(per_example)
    mean = sum(per_example) / k
    se = math.sqrt(sum((x - mean) ** 2 for x in per_example) / (k * (k - 1))) if k > 1 else float("nan")
    return {"nll": sum(t for t, _ in items) / max(1, n_tok), "nll_example_mean": mean, "se": se, "n": k, "tokens": n_tok}


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: list[str], device, precision: str, max_new_tokens: int, batch_size: int = 16) -> list[str]:
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only generation needs left padding
    outs = []
    try:
        for i in range(0, len(prompts), batch_size):
            texts = [chat_texts(tokenizer, p)[0] for p in prompts[i : i + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with autocast(device, precision):
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            outs += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = old_side
    return outs


def greedy_accuracy(model, tokenizer, examples, device, precision: str, max_new_tokens: int = 32) -> dict:
    with_answers = [e for e in examples if e.answer is not None]
    if not with_answers:
        return {}
    texts = greedy_generate(model, tokenizer, [e.prompt for e in with_answers], device, precision, max_new_tokens)
    correct = [answers_match(extract_answer(t, e.answer), e.answer) for t, e in zip(texts, with_answers)]
    k = len(correct)
    acc = sum(correct) / k
    return {"accuracy": acc, "se": math.sqrt(acc * (1 - acc) / k), "n": k, "max_new_tokens": max_new_tokens,
            "samples": [{"prompt": e.prompt, "output": t, "answer": e.answer, "correct": c}
                        for e, t, c in list(zip(with_answers, texts, correct))[:5]]}


@torch.no_grad()
def per_example_nll(model, tokenizer, examples, device, precision: str, seq_len: int = 512,
                    batch_size: int = 8) -> list[tuple[float, int] | None]:
    """(summed NLL of the response tokens, number of response tokens) per example, in input order.

    The per-item form of `target_nll`, for paired comparisons (the same examples scored under two
    models). An example whose prompt alone fills `seq_len` has no scored token and gives None.
    Responses are truncated to seq_len like `tokenize_examples` does.
    """
    model.eval()
    items = []
    for ex in examples:
        p, f = chat_texts(tokenizer, ex.prompt, ex.response)
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(f[len(p):], add_special_tokens=False)["input_ids"]
        items.append(None if len(p_ids) >= seq_len or not r_ids else ((p_ids + r_ids)[:seq_len], len(p_ids)))
    out: list[tuple[float, int] | None] = [None] * len(items)
    order = [i for i, it in enumerate(items) if it is not None]
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        L = max(len(items[i][0]) for i in chunk)
        ids = torch.full((len(chunk), L), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(chunk), L), -100, dtype=torch.long)
        att = torch.zeros((len(chunk), L), dtype=torch.long)
        for j, i in enumerate(chunk):
            seq, n_prompt = items[i]
            ids[j, : len(seq)] = torch.tensor(seq)
            labels[j, n_prompt : len(seq)] = ids[j, n_prompt : len(seq)]
            att[j, : len(seq)] = 1
        with autocast(device, precision):
            logits = model(input_ids=ids.to(device), attention_mask=att.to(device), use_cache=False).logits
        for j, i in enumerate(chunk):
            total, n = causal_lm_loss_sum(logits[j : j + 1], labels[j : j + 1].to(device))
            out[i] = (float(total), int(n))
    return out
