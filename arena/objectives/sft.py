"""SFT: next-token cross-entropy on the assistant tokens of packed chat examples.

The options beyond the stock run are the mitigations of incomplete learning (docs/training.md,
"Mitigations of incomplete learning"): data order (`order`, `reverse`), conflict bucketing,
dynamic resampling of dropping subsets and progressive epochs with early stopping. Every one is off
by default and is left out of the resolved config while off (`arena.schema.added_field`), so the
stock run, its batches and its run id are unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Literal, Optional

import numpy as np
import torch

from arena.components import OBJECTIVES
from arena.errors import ConfigError, DataError
from arena.objectives.base import LossOutput, Objective, TrainContext
from arena.objectives.losses import label_ce_sum, label_logits, token_ce_sum
from arena.schema import added_field
from arena.training.device import autocast
from arena.training.mitigations import Progressive, Resampler
from arena.training.packing import pack, padding_free_batch, tokenize_examples
from arena.training.row_stream import RowStream
from arena.training.varlen import cu_seq_lens, packed_attention, supports_packed_attention

DEFAULT_SOURCE = "all"  # the subset of examples without meta["source"]


def _check(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(name, value, allowed)  # build() prefixes "objective."


def packed_label_logits(ctx: TrainContext, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """([n, V] logits, [n] labels) at the labelled positions of a packed micro-batch, in either layout
    (rows, or padding-free with per-document attention); shared by every objective that trains on packed
    documents (sft, cpt)."""
    return _packed(ctx, batch, label_logits)


def packed_ce_sum(ctx: TrainContext, batch: dict) -> tuple[torch.Tensor, int]:
    """(Σ −log p(label), n labels) of a packed micro-batch: the fused head + cross-entropy
    (`train.fused_ce`, arena/objectives/linear_ce.py) where it applies, else the stock logits."""
    if ctx.train.fused_ce:
        fused = _packed(ctx, batch, label_ce_sum)
        if fused is not None:
            return fused
    logits, targets = packed_label_logits(ctx, batch)
    return token_ce_sum(logits, targets), int(targets.numel())


def _packed(ctx: TrainContext, batch: dict, fn):
    dev = ctx.device
    kwargs = {"position_ids": batch["position_ids"].to(dev)}
    packed = contextlib.nullcontext()
    if "cu_seq_lens" in batch:
        kwargs["cu_seq_lens_q"] = kwargs["cu_seq_lens_k"] = batch["cu_seq_lens"]
        packed = packed_attention(ctx.model)
    with autocast(dev, ctx.precision), packed:
        return fn(ctx.model, batch["input_ids"].to(dev), batch["labels"].to(dev), **kwargs)


@OBJECTIVES.register("sft")
class SFT(Objective):
    name = "sft"
    description = "supervised fine-tuning: cross-entropy on assistant tokens (prompt masked), packed rows"

    @dataclasses.dataclass
    class Options:
        # data order: given keeps the target's example order (next-fit packing, no permutation)
        order: Literal["shuffled", "given"] = added_field("shuffled")
        reverse: bool = added_field(False)  # play the whole row stream back to front
        # conflicts: near-duplicate prompts with different answers never share a row or micro-batch
        bucketing: Literal["off", "conflicts"] = added_field("off")
        bucketing_similarity: float = added_field(0.9)
        resample_every: int = added_field(0)  # dev-NLL check every N steps (0: off)
        resample_drop: float = added_field(0.05)  # relative rise over the subset's best that counts as dropping
        resample_share: float = added_field(0.25)  # share of each micro-batch's rows replaced
        resample_dev: int = added_field(16)  # dev examples per subset
        progressive: bool = added_field(False)  # epoch by epoch, stop when the val loss rises
        max_epochs: int = added_field(4)
        val_fraction: float = added_field(0.05)
        stop_delta: float = added_field(0.01)
        # the off-policy cold start of OPD: train on a teacher's samples instead of the references
        responses_from: Optional[str] = added_field(None)  # teacher: arena run folder or model
        responses_temperature: float = added_field(0.7)
        responses_top_p: float = added_field(0.95)
        responses_max_new_tokens: int = added_field(64)

        def __post_init__(self):
            _check(0 < self.bucketing_similarity <= 1, "bucketing_similarity", self.bucketing_similarity,
                   "must be in (0, 1]")
            _check(self.resample_every >= 0, "resample_every", self.resample_every, "must be >= 0 (0: off)")
            _check(self.resample_drop >= 0, "resample_drop", self.resample_drop, "must be >= 0")
            _check(0 < self.resample_share <= 1, "resample_share", self.resample_share, "must be in (0, 1]")
            _check(self.resample_dev >= 1, "resample_dev", self.resample_dev, "must be a positive integer")
            _check(self.max_epochs >= 1, "max_epochs", self.max_epochs, "must be a positive integer")
            _check(0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "must be in (0, 1)")
            _check(self.stop_delta >= 0, "stop_delta", self.stop_delta, "must be >= 0")
            # progressive epochs read the stream forwards, epoch by epoch; a reversed stream has
            # no first epoch to stop after
            _check(not (self.progressive and self.reverse), "reverse", self.reverse,
                   "cannot be combined with objective.progressive")
            _check(self.responses_from is None or bool(str(self.responses_from).strip()), "responses_from",
                   self.responses_from, "a teacher (arena run folder or model), or null")
            _check(self.responses_temperature > 0, "responses_temperature", self.responses_temperature, "must be > 0")
            _check(0 < self.responses_top_p <= 1, "responses_top_p", self.responses_top_p, "must be in (0, 1]")
            _check(self.responses_max_new_tokens > 0, "responses_max_new_tokens", self.responses_max_new_tokens,
                   "must be a positive integer")

    def mitigation_options(self) -> "SFT.Options":
        """The mitigation options; a subclass with Options of its own (docs/extending.md's DFT) gets
        those it declares and the stock defaults for the rest."""
        o = self.options
        if isinstance(o, SFT.Options):
            return o
        return SFT.Options(**{f.name: getattr(o, f.name) for f in dataclasses.fields(SFT.Options) if hasattr(o, f.name)})

    def prepare(self, ctx: TrainContext) -> dict:
        o, t = self.mitigation_options(), ctx.train
        examples = ctx.target.train_examples(ctx.seed)
        self.n_all = len(examples)
        extra, source_idx = {}, list(range(len(examples)))  # index into train_examples(seed) of each example
        if o.responses_from:
            from arena.objectives.teacher_samples import teacher_responses

            examples, source_idx, extra["teacher_responses"] = teacher_responses(
                ctx, examples, o.responses_from, o.responses_temperature, o.responses_top_p, o.responses_max_new_tokens)
        train_idx = list(range(len(examples)))
        if o.progressive:
            n_val = max(1, round(o.val_fraction * len(examples)))
            if n_val >= len(examples):
                raise DataError(f"objective.progressive: {len(examples)} examples leave none to train on after "
                                f"holding out val_fraction {o.val_fraction}")
            val = set(np.random.default_rng([ctx.seed, 0x7A1]).choice(len(examples), n_val, replace=False).tolist())
            self.val_examples = [examples[i] for i in sorted(val)]
            train_idx = [i for i in train_idx if i not in val]
        train_ex = [examples[i] for i in train_idx]
        tokenized, dropped = tokenize_examples(ctx.tokenizer, train_ex, t.seq_len)
        kept = [train_ex[e.index] for e in tokenized]
        # index into train_examples(seed) of each packed document (what seen_steps reports)
        self.example_index = np.array([source_idx[train_idx[e.index]] for e in tokenized], dtype=np.int64)
        groups = None
        if o.bucketing == "conflicts":
            from arena.data.similarity import conflict_groups  # scikit-learn: imported only when used

            found = conflict_groups(kept, o.bucketing_similarity)
            groups = [-1] * len(kept)
            for g, members in enumerate(found):
                for m in members:
                    groups[m] = g
            extra["bucketing"] = {"conflict_groups": len(found), "examples_in_groups": sum(map(len, found))}
        self.data = d = pack(tokenized, t.seq_len, ctx.tokenizer.pad_token_id, seed=ctx.seed, n_dropped=dropped,
                             order=o.order, groups=groups)
        row_groups = None
        if groups is not None:
            row_groups = [frozenset(groups[i] for i in r if groups[i] >= 0) for r in d.row_examples]
        self.stream = RowStream(d.rows, t.batch_size, t.grad_accum, t.steps, ctx.seed,
                                shuffle=o.order == "shuffled", reverse=o.reverse, row_groups=row_groups)
        if groups is not None:
            for e in range(math.ceil(t.steps * t.grad_accum * t.batch_size / d.rows)):
                self.stream.epoch_perm(e)  # every epoch of the run, so the stats count all repairs
            extra["bucketing"].update(repairs=self.stream.repairs, unresolved=self.stream.unresolved)
        self.resampler = self.progress = None
        if o.resample_every:
            extra["resample"] = self._prepare_resampling(ctx, kept)
        if o.progressive:
            ends = Progressive.epoch_end_steps(d.rows, t.batch_size * t.grad_accum, o.max_epochs, t.steps)
            self.progress = Progressive(o.max_epochs, o.stop_delta, ends)
            extra["progressive"] = {"val_examples": len(self.val_examples), "epoch_end_steps": ends}
        self.padding_free = t.packing == "padding_free" and supports_packed_attention(ctx.model)
        out = {
            "examples": d.n_examples,
            "dropped_too_long": d.n_dropped,
            "rows": d.rows,
            "fill_ratio": round(d.fill_ratio(), 4),
            "epoch_tokens": int(d.n_real.sum()),
            # what actually ran: padding_free falls back to rows for models it cannot serve
            "layout": "padding_free" if self.padding_free else "rows",
        }
        if o.order != "shuffled" or o.reverse:
            out["order"] = o.order + (", reversed" if o.reverse else "")
        return {**out, **extra}

    def _prepare_resampling(self, ctx: TrainContext, kept: list) -> dict:
        """Subsets, the rows holding each, and a seeded dev slice of each subset's train examples."""
        o = self.mitigation_options()
        source = [str(e.meta.get("source", DEFAULT_SOURCE)) for e in kept]
        subsets = sorted(set(source))
        doc_rows: dict[str, set] = {s: set() for s in subsets}
        for r, docs in enumerate(self.data.row_examples):
            for i in docs:
                doc_rows[source[i]].add(r)
        self.subset_rows = {s: np.array(sorted(v), dtype=np.int64) for s, v in doc_rows.items()}
        self.dev = {}
        for j, s in enumerate(subsets):
            members = [i for i, x in enumerate(source) if x == s]
            pick = np.random.default_rng([ctx.seed, 0xDE5, j]).choice(len(members), min(o.resample_dev, len(members)),
                                                                       replace=False)
            self.dev[s] = [kept[members[k]] for k in sorted(pick.tolist())]
        self.resampler = Resampler(o.resample_every, o.resample_drop, o.resample_share)
        stats = {"subsets": {s: int(sum(x == s for x in source)) for s in subsets},
                 "dev_per_subset": {s: len(v) for s, v in self.dev.items()}}
        if len(subsets) == 1:
            stats["note"] = "the target has one subset: resampling can only replace its rows by its own rows"
        return stats

    def _batch(self, rows: np.ndarray) -> dict:
        rows = torch.from_numpy(np.ascontiguousarray(rows))
        d = self.data
        ids, labels, pos = d.input_ids[rows], d.labels[rows], d.position_ids[rows]
        batch = {"n_real": int(d.n_real[rows].sum())}
        if self.padding_free:
            ids, labels, pos = padding_free_batch(ids, labels, pos, d.n_real[rows])
            batch["cu_seq_lens"] = cu_seq_lens(pos)  # stays on the host: read once per layer
        batch.update(input_ids=ids, labels=labels, position_ids=pos,
                     n_loss_tokens=int((labels[:, 1:] != -100).sum()))
        return batch

    def batch_rows(self, ctx: TrainContext, step: int) -> list[np.ndarray]:
        """The packed-row indices of each micro-batch of `step`, dynamic resampling included."""
        out = []
        for m in ctx.micro_range():
            rows = self.stream.rows(step, m)
            if self.resampler is not None and self.resampler.dropping:
                rows, _ = self.resampler.replace(rows, ctx.seed, step, m, self.subset_rows)
            out.append(rows)
        return out

    def batches(self, ctx: TrainContext, step: int) -> list[dict]:
        return [self._batch(rows) for rows in self.batch_rows(ctx, step)]

    # -- hooks of the mitigations -------------------------------------------------------------------

    def score_nll(self, ctx: TrainContext, examples: list) -> float | None:
        """Mean token NLL of the responses (model in eval mode, no grad; train mode restored after)."""
        from arena.evaluation.model_io import per_example_nll

        was_training = ctx.model.training
        try:
            items = [x for x in per_example_nll(ctx.model, ctx.tokenizer, examples, ctx.device, ctx.precision,
                                                ctx.train.seq_len, ctx.train.batch_size) if x]
        finally:
            ctx.model.train(was_training)
        n = sum(k for _, k in items)
        return sum(v for v, _ in items) / n if n else None

    def subset_dev_nll(self, ctx: TrainContext) -> dict[str, float]:
        out = {s: self.score_nll(ctx, exs) for s, exs in self.dev.items()}
        return {s: v for s, v in out.items() if v is not None}

    def val_nll(self, ctx: TrainContext) -> float:
        v = self.score_nll(ctx, self.val_examples)
        return float("nan") if v is None else v

    def after_step(self, ctx: TrainContext, step: int) -> dict:
        out, step1 = {}, step + 1
        if self.resampler is not None:
            if self.resampler.dropping:  # the step just taken replaced rows
                out["resampled_rows"] = self.resampler.n_replaced(ctx.train.batch_size) * ctx.train.grad_accum
            if self.resampler.due(step1):
                out.update(self.resampler.update(step1, self.subset_dev_nll(ctx)))
        if self.progress is not None and self.progress.due(step1):
            out.update(self.progress.update(step1, self.val_nll(ctx)))
        return out

    def state_dict(self) -> dict:
        out = {}
        if getattr(self, "resampler", None) is not None:
            out["resample"] = self.resampler.state_dict()
        if getattr(self, "progress", None) is not None:
            out["progressive"] = self.progress.state_dict()
        return out

    def load_state_dict(self, d: dict) -> None:
        if "resample" in d and self.resampler is not None:
            self.resampler.load_state_dict(d["resample"])
        if "progressive" in d and self.progress is not None:
            self.progress.load_state_dict(d["progressive"])

    def seen_steps(self, ctx: TrainContext, until: int | None = None) -> list[list[int]]:
        """For each example of `ctx.target.train_examples(ctx.seed)`, the optimizer steps (1-based,
        up to `until` or train.steps) whose micro-batches held it; [] for examples never trained on
        (dropped as too long, progressive's validation slice).

        The planned stream: order, reverse and bucketing are exact; resampling's replaced rows
        (decided during training from dev losses) are not in it, and a progressive run that stopped
        early trained only up to its record's `stopped_early_at` (pass it as `until`).
        """
        if not hasattr(self, "stream"):
            self.prepare(ctx)
        seen: list[list[int]] = [[] for _ in range(self.n_all)]
        last = ctx.train.steps if until is None else min(until, ctx.train.steps)
        for step in range(last):
            for m in range(ctx.train.grad_accum):
                for r in self.stream.rows(step, m):
                    for i in self.data.row_examples[r]:
                        s = seen[self.example_index[i]]
                        if not s or s[-1] != step + 1:
                            s.append(step + 1)
        return seen

    def scored_logits(self, ctx: TrainContext, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """([n, V] logits at the n positions that predict a label, [n] labels) of one micro-batch,
        in either layout; a token-level variant of SFT overrides `loss` and reuses this."""
        return packed_label_logits(ctx, batch)

    def loss(self, ctx: TrainContext, batch: dict) -> LossOutput:
        if type(self).scored_logits is not SFT.scored_logits:  # a variant scores its own logits
            logits, targets = self.scored_logits(ctx, batch)
            return LossOutput(token_ce_sum(logits, targets), int(targets.numel()))
        return LossOutput(*packed_ce_sum(ctx, batch))
