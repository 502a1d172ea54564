"""What SDPO, SRPO, RLSD and RLRT share: GRPO's rollouts (groups, verifiable reward, advantages)
plus a self-teacher — the same network re-scoring each rollout after a prompt that carries
privileged context (`arena/objectives/self_teacher.py`).

A subclass says which slots its template must have (`REQUIRED_SLOTS`) and which rows of a
micro-batch get a teacher, with what context (`teacher_contexts`); this base builds the teacher's
batch for those rows, keeps the teacher's weights (current / EMA / synced) through training and
checkpoints, and logs how many samples had a teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from arena.errors import ConfigError
from arena.objectives.base import TrainContext
from arena.objectives.grpo import GRPO
from arena.objectives.rl_losses import token_logprobs
from arena.objectives.sd_losses import first_success_sibling, teacher_entropy
from arena.objectives.self_teacher import (
    SOLUTION_TEMPLATE,
    TeacherMode,
    TeacherRows,
    TeacherWeights,
    build_rows,
    check_teacher_options,
    check_template,
    score,
    teacher_prompt,
)
from arena.objectives.teacher import align_vocab


class SelfDistilled(GRPO):
    """Not registered: the base of the self-distillation objectives."""

    REQUIRED_SLOTS: ClassVar[tuple[str, ...]] = ("solution",)

    @dataclass
    class Options(GRPO.Options):
        template: str = SOLUTION_TEMPLATE  # the teacher's user turn; slots {prompt} {solution} {answer}
        success_threshold: float = 0.5  # reward >= this: a successful rollout (a demonstration)
        exclude_self: bool = True  # a sample is never its own demonstration (SDPO: dont_reprompt_on_self_success)
        teacher_weights: TeacherMode = "ema"
        teacher_ema_rate: float = 0.05  # ema: θ̄ ← (1−r)·θ̄ + r·θ after every step
        teacher_sync_every: int = 10  # synced: copy θ every N steps, frozen in between

        def __post_init__(self):
            super().__post_init__()
            check_teacher_options(self.teacher_ema_rate, self.teacher_sync_every)

    @classmethod
    def validate_options(cls, options) -> None:
        check_template(options.template, "objective.template", cls.REQUIRED_SLOTS)

    def prepare(self, ctx: TrainContext) -> dict:
        self.validate_options(self.options)  # also when built by hand, not through the config
        stats = super().prepare(ctx)
        o = self.options
        self.teacher = TeacherWeights(o.teacher_weights, o.teacher_ema_rate, o.teacher_sync_every)
        self.teacher.attach(ctx.model)
        return {**stats, "teacher": f"self ({o.teacher_weights})"}

    # -- which rows get a teacher ----------------------------------------------------------------------
    def demonstrations(self, batch: dict) -> torch.Tensor:
        """Per sample, the flat index of its demonstration (first successful sibling) or −1."""
        o = self.options
        return first_success_sibling(batch["rewards"], o.n_samples, o.success_threshold, o.exclude_self)

    def teacher_contexts(self, batch: dict, step: int) -> dict[int, dict]:
        """{row: slot values} for the rows that get a teacher (subclasses decide)."""
        raise NotImplementedError

    def extend_batch(self, ctx: TrainContext, batch: dict, step: int) -> None:
        contexts = self.teacher_contexts(batch, step)
        rows = sorted(contexts)
        texts = [teacher_prompt(self.options.template, batch["examples"][r].prompt, **contexts[r]) for r in rows]
        teacher_rows = build_rows(ctx.tokenizer, rows, texts, batch["completions"], ctx.tokenizer.pad_token_id)
        teacher_rows.store(batch)
        if ctx.world > 1:
            # Sharded: score now, inside the loop's gathered rollout block, where a forward runs no
            # collective. At loss time every FSDP forward all-gathers with the other ranks, and
            # ranks whose rollouts have no teacher row would skip theirs (a mismatched collective).
            # The weights are the same then as now: the optimizer steps after the whole step.
            batch["teacher_scores"] = score(ctx.model, self.teacher, teacher_rows, ctx.device, ctx.precision)
        n = len(batch["rewards"])
        batch["metrics"]["teacher_share"] = len(rows) / max(1, n)
        batch["metrics"]["success_rate"] = float((batch["rewards"] >= self.options.success_threshold).float().mean())

    def solution_contexts(self, batch: dict, rows) -> dict[int, dict]:
        """{row: {"solution": its demonstration's text}} for those of `rows` that have one."""
        demo = self.demonstrations(batch)
        return {int(r): {"solution": batch["texts"][int(demo[r])]} for r in rows if demo[r] >= 0}

    # -- teacher scores at loss time -------------------------------------------------------------------
    def teacher_logits(self, ctx: TrainContext, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """([n] bool mask of the teacher rows' tokens among the student's, teacher logits [n_sel, V]
        at the sampling temperature). Run before the student's forward (the weights are swapped)."""
        rows = TeacherRows.of(batch)
        sel = rows.token_mask(batch["completion_mask"]).to(ctx.device)
        t = batch.get("teacher_scores")
        if t is None:
            t = score(ctx.model, self.teacher, rows, ctx.device, ctx.precision)
        return sel, t.to(ctx.device) / self.options.temperature

    def teacher_gap(self, ctx, batch, logits, targets, logp) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Δ_t = sg(log P_T(y_t) − log P_S(y_t)) at the teacher rows' tokens ([n], 0 elsewhere), the
        token mask, and diagnostics (mean gap, teacher entropy)."""
        sel, t = self.teacher_logits(ctx, batch)
        gap = torch.zeros_like(logp)
        metrics = {}
        if sel.any():
            _, t = align_vocab(logits[sel], t)
            gap[sel] = token_logprobs(t, targets[sel]) - logp[sel].detach()  # t is already at temperature
            metrics["teacher_gap"] = float(gap[sel].mean())
            metrics["teacher_entropy"] = float(teacher_entropy(t).mean())
        return gap.detach(), sel, metrics

    # -- teacher weights through training --------------------------------------------------------------
    def after_step(self, ctx: TrainContext, step: int) -> dict:
        self.teacher.after_step(step)
        return {}

    def tensor_state(self) -> dict:
        return self.teacher.tensor_state()

    def load_tensor_state(self, state: dict) -> None:
        try:
            self.teacher.load_tensor_state(state)
        except ValueError as e:
            raise ConfigError("objective.teacher_weights", self.options.teacher_weights, str(e)) from None
