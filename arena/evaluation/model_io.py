"""The two model calls the held-out probes and the NLL proxies make: greedy generation and the
per-example NLL of reference responses, both through the tokenizer's chat template."""

from __future__ import annotations

import torch

from arena.objectives.losses import causal_lm_loss_sum
from arena.training.device import autocast
from arena.training.packing import chat_texts


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: list[str], device, precision: str, max_new_tokens: int, batch_size: int = 16,
                    engine: str = "auto") -> list[str]:
    """Greedy responses to user prompts (chat template applied), special tokens stripped.

    `engine` "hf" is `model.generate` in batches of `batch_size` (the reference); any other name goes
    through `arena.generation` (auto: the native engine on CPU), which batches all prompts at once.
    """
    if engine != "hf":
        from arena.generation.engine import EngineOptions, build_engine
        from arena.generation.requests import GenRequest, Sampling

        eng = build_engine(engine, model, tokenizer, device=device, precision=precision,
                           options=EngineOptions(max_batch=batch_size))
        ids = [tokenizer(chat_texts(tokenizer, p)[0], add_special_tokens=False)["input_ids"] for p in prompts]
        done = eng.generate([GenRequest(x, max_new_tokens) for x in ids], Sampling(), seed=0)
        return tokenizer.batch_decode([c.token_ids for c in done], skip_special_tokens=True)
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


@torch.no_grad()
def per_example_nll(model, tokenizer, examples, device, precision: str, seq_len: int = 512,
                    batch_size: int = 8) -> list[tuple[float, int] | None]:
    """(summed NLL of the response tokens, number of response tokens) per example, in input order.

    The per-item form of `heldout.heldout_nll`, for paired comparisons (the same examples scored under two
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
