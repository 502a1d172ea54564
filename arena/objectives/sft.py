"""SFT: next-token cross-entropy on the assistant tokens of packed chat examples."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from arena.components import OBJECTIVES
from arena.objectives.base import LossOutput, Objective, TrainContext
from arena.objectives.losses import label_logits, token_ce_sum
from arena.training.device import autocast
from arena.training.packing import pack, padding_free_batch, tokenize_examples
from arena.training.varlen import cu_seq_lens, packed_attention, supports_packed_attention


@OBJECTIVES.register("sft")
class SFT(Objective):
    name = "sft"
    description = "supervised fine-tuning: cross-entropy on assistant tokens (prompt masked), packed rows"

    @dataclass
    class Options:
        pass

    def prepare(self, ctx: TrainContext) -> dict:
        examples = ctx.target.train_examples(ctx.seed)
        tokenized, dropped = tokenize_examples(ctx.tokenizer, examples, ctx.train.seq_len)
        self.data = pack(tokenized, ctx.train.seq_len, ctx.tokenizer.pad_token_id, seed=ctx.seed, n_dropped=dropped)
        self.padding_free = ctx.train.packing == "padding_free" and supports_packed_attention(ctx.model)
        d = self.data
        return {
            "examples": d.n_examples,
            "dropped_too_long": d.n_dropped,
            "rows": d.rows,
            "fill_ratio": round(d.fill_ratio(), 4),
            "epoch_tokens": int(d.n_real.sum()),
            # what actually ran: padding_free falls back to rows for models it cannot serve
            "layout": "padding_free" if self.padding_free else "rows",
        }

    def _row_indices(self, ctx: TrainContext, step: int, micro: int) -> np.ndarray:
        # Row i of the infinite stream is row perm_e[i % N] of epoch e = i // N; each epoch has
        # its own seeded permutation, so any step's rows are known without replaying the stream
        # (resume needs no data state) and every method of a sweep sees the same rows.
        B, N = ctx.train.batch_size, self.data.rows
        start = (step * ctx.train.grad_accum + micro) * B
        idx = np.arange(start, start + B)
        out = np.empty(B, dtype=np.int64)
        for e in np.unique(idx // N):
            perm = np.random.default_rng([ctx.seed, int(e)]).permutation(N)
            sel = idx // N == e
            out[sel] = perm[idx[sel] % N]
        return out

    def batches(self, ctx: TrainContext, step: int) -> list[dict]:
        out = []
        for m in range(ctx.train.grad_accum):
            rows = torch.from_numpy(self._row_indices(ctx, step, m))
            d = self.data
            ids, labels, pos = d.input_ids[rows], d.labels[rows], d.position_ids[rows]
            batch = {"n_real": int(d.n_real[rows].sum())}
            if self.padding_free:
                ids, labels, pos = padding_free_batch(ids, labels, pos, d.n_real[rows])
                batch["cu_seq_lens"] = cu_seq_lens(pos)  # stays on the host: read once per layer
            batch.update(input_ids=ids, labels=labels, position_ids=pos,
                         n_loss_tokens=int((labels[:, 1:] != -100).sum()))
            out.append(batch)
        return out

    def scored_logits(self, ctx: TrainContext, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """([n, V] logits at the n positions that predict a label, [n] labels) of one micro-batch,
        in either layout; a token-level variant of SFT overrides `loss` and reuses this."""
        dev = ctx.device
        kwargs = {"position_ids": batch["position_ids"].to(dev)}
        packed = contextlib.nullcontext()
        if "cu_seq_lens" in batch:
            kwargs["cu_seq_lens_q"] = kwargs["cu_seq_lens_k"] = batch["cu_seq_lens"]
            packed = packed_attention(ctx.model)
        with autocast(dev, ctx.precision), packed:
            return label_logits(ctx.model, batch["input_ids"].to(dev), batch["labels"].to(dev), **kwargs)

    def loss(self, ctx: TrainContext, batch: dict) -> LossOutput:
        logits, targets = self.scored_logits(ctx, batch)
        return LossOutput(token_ce_sum(logits, targets), int(targets.numel()))
