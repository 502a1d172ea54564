"""Chat-formatted tokenization with prompt masking, and best-fit packing into fixed-length rows.

Why packing this way: examples are placed whole (never split across rows, so every label token
sees its prompt) into rows of `seq_len` by best-fit-decreasing bin packing. Each document restarts
its `position_ids` at 0, so packed documents never attend to each other: in the `rows` layout
transformers turns that into a block-diagonal causal mask; in the default `padding_free` layout
(`padding_free_batch`) a micro-batch's rows are laid end to end without their padding and attention
runs per document (arena/training/varlen.py), so the row tails that whole-document packing cannot
fill (GSM8K at 256 tokens: 19%) cost nothing.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from arena.errors import DataError

IGNORE = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    n_prompt: int  # the first n_prompt tokens are masked from the loss
    index: int = -1  # position in the examples given to tokenize_examples (kept when others are dropped)


def chat_texts(tokenizer, prompt: str, response: str | None = None) -> tuple[str, str | None]:
    """(prompt text ending in the assistant header, full text) via the model's chat template."""
    msgs = [{"role": "user", "content": prompt}]
    prompt_text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if response is None:
        return prompt_text, None
    full = tokenizer.apply_chat_template(msgs + [{"role": "assistant", "content": response}], tokenize=False)
    return prompt_text, full


def tokenize_examples(tokenizer, examples, seq_len: int) -> tuple[list[TokenizedExample], int]:
    """Tokenize (prompt, response) examples; returns (kept, n_dropped).

    Over-long examples are truncated to seq_len; those whose prompt alone fills seq_len carry no
    label token and are dropped (counted, never silently).
    """
    prompts, fulls = [], []
    for ex in examples:
        p, f = chat_texts(tokenizer, ex.prompt, ex.response)
        if not f.startswith(p):  # templates that rewrite the prompt when an answer follows
            raise ValueError("chat template output for prompt+response does not start with the prompt alone")
        prompts.append(p)
        fulls.append(f[len(p):])
    enc_p = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    enc_r = tokenizer(fulls, add_special_tokens=False)["input_ids"]
    out, dropped = [], 0
    for k, (p_ids, r_ids) in enumerate(zip(enc_p, enc_r)):
        if len(p_ids) >= seq_len or not r_ids:
            dropped += 1
            continue
        ids = (p_ids + r_ids)[:seq_len]
        out.append(TokenizedExample(ids, len(p_ids), k))
    return out, dropped


def best_fit_bins(lengths: list[int], capacity: int, groups: list[int] | None = None) -> list[list[int]]:
    """Best-fit-decreasing bin packing of item lengths; returns item indices per bin.

    Deterministic: ties are broken by item index, bins by creation order. `groups` (one id per
    item, -1 for none) keeps items of one group in different bins: an item goes to the tightest
    bin that fits and holds no member of its group (a new bin when none does).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    held: list[set[int]] = []  # group ids per bin
    free: list[tuple[int, int]] = []  # sorted (remaining capacity, bin id)
    for i in order:
        n = lengths[i]
        g = -1 if groups is None else groups[i]
        k = bisect.bisect_left(free, (n, -1))
        while g >= 0 and k < len(free) and g in held[free[k][1]]:
            k += 1
        if k < len(free):
            rem, b = free.pop(k)
            bins[b].append(i)
            bisect.insort(free, (rem - n, b))
        else:
            bins.append([i])
            held.append(set())
            b = len(bins) - 1
            bisect.insort(free, (capacity - n, b))
        if g >= 0:
            held[b].add(g)
    return bins


def next_fit_bins(lengths: list[int], capacity: int, groups: list[int] | None = None) -> list[list[int]]:
    """Sequential next-fit: items in their given order, a new bin whenever the next item does not
    fit in the current one (or its group is already there). Keeps the data order: bin b holds
    only items that come after those of bin b-1."""
    bins: list[list[int]] = []
    used, held = capacity + 1, set()
    for i, n in enumerate(lengths):
        g = -1 if groups is None else groups[i]
        if used + n > capacity or (g >= 0 and g in held):
            bins.append([])
            used, held = 0, set()
        bins[-1].append(i)
        used += n
        if g >= 0:
            held.add(g)
    return bins


@dataclass
class PackedData:
    input_ids: torch.Tensor  # [rows, seq_len] long
    labels: torch.Tensor  # [rows, seq_len] long, IGNORE on prompt and padding
    position_ids: torch.Tensor  # [rows, seq_len] long, restarts at 0 for each document
    n_real: torch.Tensor  # [rows] non-padding tokens per row
    n_label: torch.Tensor  # [rows] label tokens per row
    n_examples: int
    n_dropped: int
    # row -> indices (into the examples given to `pack`) of the documents it holds, in row order
    row_examples: list[list[int]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.input_ids.shape[0]

    def fill_ratio(self) -> float:
        return float(self.n_real.sum()) / self.input_ids.numel()


def pack(examples: list[TokenizedExample], seq_len: int, pad_id: int, seed: int, n_dropped: int = 0,
         order: Literal["shuffled", "given"] = "shuffled", groups: list[int] | None = None) -> PackedData:
    """Pack tokenized examples into rows.

    shuffled: best-fit-decreasing bins, row order shuffled with `seed`. given: sequential next-fit
    bins, rows in the examples' order (row r holds earlier documents than row r+1). `groups` (one
    id per example, -1 none) keeps members of one group in different rows.
    """
    if not examples:
        # Bad input (a user-fixable setting), not a bug: an ArenaError, so the CLI says so in one line.
        why = (f"all {n_dropped} have a prompt of at least train.seq_len ({seq_len}) tokens; raise train.seq_len"
               if n_dropped else "the target produced none")
        raise DataError(f"no training examples left after tokenization: {why}")
    lengths = [len(e.input_ids) for e in examples]
    if order == "given":
        bins = next_fit_bins(lengths, seq_len, groups)
        perm = np.arange(len(bins))
    else:
        bins = best_fit_bins(lengths, seq_len, groups)
        perm = np.random.default_rng(seed).permutation(len(bins))
    n = len(bins)
    ids = torch.full((n, seq_len), pad_id, dtype=torch.long)
    labels = torch.full((n, seq_len), IGNORE, dtype=torch.long)
    pos = torch.zeros((n, seq_len), dtype=torch.long)
    n_real = torch.zeros(n, dtype=torch.long)
    row_examples = []
    for row, b in enumerate(perm):
        at = 0
        row_examples.append(sorted(bins[b]))
        for i in row_examples[-1]:  # stable document order inside a row
            e = examples[i]
            L = len(e.input_ids)
            ids[row, at : at + L] = torch.tensor(e.input_ids)
            # A document's first token never carries a label (n_prompt >= 1): in the padding-free
            # layout the previous document's last token would otherwise be scored on it.
            first = max(e.n_prompt, 1)
            labels[row, at + first : at + L] = torch.tensor(e.input_ids[first:])
            pos[row, at : at + L] = torch.arange(L)
            at += L
        n_real[row] = at
        if at < seq_len:  # padding is its own "document" so it cannot disturb real tokens
            pos[row, at:] = torch.arange(seq_len - at)
    # Causal LM convention in transformers: labels are shifted inside the loss, so the label at
    # position t is predicted from tokens < t; IGNORE at the first token of each document keeps
    # a document from being scored against the previous one's last token.
    return PackedData(ids, labels, pos, n_real, (labels != IGNORE).sum(1), len(examples), n_dropped, row_examples)


def padding_free_batch(input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor,
                       n_real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows [B, seq_len] -> one row [1, Σ n_real] without padding (row-major order kept)."""
    real = torch.arange(input_ids.shape[1]) < n_real[:, None]
    return input_ids[real][None], labels[real][None], position_ids[real][None]
