"""The self-teacher of SDPO, SRPO, RLSD and RLRT: the student's own network, given privileged
context in its prompt, re-scoring the student's rollout (it generates nothing).

Three parts, each small:

- **Teacher weights** (`TeacherWeights`): `current` (the weights being trained, read at the start
  of each step), `ema` (θ̄ ← (1−r)·θ̄ + r·θ after every optimizer step; SDPO and SRPO use r = 0.05)
  or `synced` (a copy refreshed every `sync_every` steps and frozen in between; RLSD uses 10).
  Only the trainable tensors are shadowed — a LoRA teacher keeps the frozen base and its own
  adapter copy — and they are swapped in for the teacher's forward, so no second model is held.
  The shadow rides in every checkpoint (`tensor_state`), so a resumed run has the same teacher.
- **Context** (`check_template`, `teacher_prompt`): a template with `{prompt}` and the privileged
  slots an objective fills — `{solution}` (a successful sibling rollout, SDPO/SRPO/RLRT) or
  `{answer}` (the reference answer, RLSD). The filled template becomes the teacher's user turn
  and goes through the same chat template as the student's prompt.
- **Scoring** (`TeacherRows`, `score`): which rows of a rollout batch get a teacher, the teacher's
  padded batch for those rows (same completion tokens after a different prompt) and its logits
  at the completion positions, in eval mode (no dropout) and without gradient.
"""

from __future__ import annotations

import string
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from arena.errors import ConfigError
from arena.rollouts import completion_logits, encode_prompts, sequence_batch

TeacherMode = Literal["current", "ema", "synced"]
SLOTS = ("prompt", "solution", "answer")

SOLUTION_TEMPLATE = "{prompt}\n\nCorrect solution:\n\n{solution}\n\nCorrectly solve the original question."
ANSWER_TEMPLATE = "{prompt}\n\nThe correct final answer is {answer}.\n\nCorrectly solve the original question."


# -- context -----------------------------------------------------------------------------------------

def template_slots(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def check_template(template: str, field: str, required: Sequence[str]) -> None:
    """ConfigError naming `field` unless the template has {prompt}, every slot in `required`, and
    no other slot (a typo such as {soluton} would otherwise fail mid-run)."""
    try:
        slots = template_slots(template)
    except ValueError as e:
        raise ConfigError(field, template, f"is not a valid format string ({e}); write literal braces as {{{{ }}}}") from None
    unknown = sorted(s for s in slots if s not in SLOTS)
    if unknown or any(not s for s in slots):
        raise ConfigError(field, template, f"unknown slot(s) {unknown or ['{}']}; allowed: "
                          + ", ".join("{" + s + "}" for s in SLOTS))
    missing = [s for s in ("prompt", *required) if s not in slots]
    if missing:
        raise ConfigError(field, template, "lacks the required slot(s) " + ", ".join("{" + s + "}" for s in missing)
                          + " (the teacher must see the question and its privileged context)")


def teacher_prompt(template: str, prompt: str, solution: str | None = None, answer: str | None = None) -> str:
    return template.format(prompt=prompt, solution=solution or "", answer=answer or "")


# -- weights -------------------------------------------------------------------------------------------

class TeacherWeights:
    """Shadow copies of the trainable tensors that the teacher's forward uses (see module doc).

    The parameters are looked up by name at each use, not kept: under FSDP2 the module holds its
    sharded parameters between steps and the whole, gathered ones inside `distributed.gathered`,
    where the sharded loop scores the teacher and updates the shadow. The shadow itself is always
    whole (a full fp32 copy of the trainable tensors, on every rank).
    """

    def __init__(self, mode: TeacherMode, rate: float = 0.05, sync_every: int = 10):
        self.mode, self.rate, self.sync_every = mode, rate, sync_every
        self.names: list[str] = []
        self.shadow: list[torch.Tensor] = []
        self.model: torch.nn.Module | None = None

    def _params(self) -> list[torch.Tensor]:
        by_name = dict(self.model.named_parameters())
        return [by_name[n] for n in self.names]

    def attach(self, model: torch.nn.Module) -> None:
        """Take the start weights (called once, before training, on every rank at once: a sharded
        parameter is all-gathered into its whole value)."""
        self.model = model
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        if self.mode != "current":
            self.shadow = [_whole(p).float().clone() for p in self._params()]

    @contextmanager
    def applied(self):
        """The teacher's weights in place of the trainable ones, for a no-grad forward."""
        if self.mode == "current":
            yield
            return
        saved = []
        params = self._params()
        try:
            for p, s in zip(params, self.shadow):
                saved.append(p.data)
                p.data = s.to(p.dtype)
            yield
        finally:
            for p, d in zip(params, saved):
                p.data = d

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """After optimizer step `step` (0-based): EMA update, or the periodic sync (whole weights:
        the sharded loop calls it inside `distributed.gathered`)."""
        if self.mode == "ema":
            for p, s in zip(self._params(), self.shadow):
                s.lerp_(_whole(p).float(), self.rate)
        elif self.mode == "synced" and (step + 1) % self.sync_every == 0:
            for p, s in zip(self._params(), self.shadow):
                s.copy_(_whole(p).float())

    def tensor_state(self) -> dict[str, torch.Tensor]:
        return {f"teacher.{n}": s for n, s in zip(self.names, self.shadow)}

    def load_tensor_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.mode == "current":
            return
        missing = [n for n in self.names if f"teacher.{n}" not in state]
        if missing:
            raise ValueError(f"checkpoint lacks the teacher's shadow weights ({len(missing)} tensors, e.g. {missing[0]})")
        self.shadow = [state[f"teacher.{n}"].float().clone() for n in self.names]


def _whole(p: torch.Tensor) -> torch.Tensor:
    """A parameter's whole value: an FSDP2 shard (DTensor) is all-gathered, a tensor is itself."""
    full = getattr(p, "full_tensor", None)
    return (full() if full is not None else p).detach()


def check_teacher_options(rate: float, sync_every: int) -> None:
    if not 0 < rate <= 1:
        raise ConfigError("teacher_ema_rate", rate, "must be in (0, 1] (θ̄ ← (1−r)·θ̄ + r·θ)")
    if sync_every <= 0:
        raise ConfigError("teacher_sync_every", sync_every, "must be a positive integer (steps)")


# -- scoring ----------------------------------------------------------------------------------------

@dataclass
class TeacherRows:
    """The rows of a rollout batch that get a teacher, and the teacher's batch for them."""

    rows: list[int]  # row indices into the student batch
    batch: dict | None  # sequence_batch of (teacher prompt, same completion) for those rows
    texts: list[str]  # the teacher's user turns (for inspection and tests)

    def store(self, batch: dict) -> None:
        """Into a micro-batch as plain fields (teacher_rows / teacher_texts / teacher_batch)."""
        batch.update(teacher_rows=self.rows, teacher_texts=self.texts, teacher_batch=self.batch)

    @classmethod
    def of(cls, batch: dict) -> "TeacherRows":
        return cls(batch["teacher_rows"], batch["teacher_batch"], batch["teacher_texts"])

    def token_mask(self, completion_mask: torch.Tensor) -> torch.Tensor:
        """[n] bool over the student's completion tokens (row-major): tokens of teacher rows, in the
        order the teacher's `completion_logits` returns them."""
        row_of = completion_mask.nonzero()[:, 0]
        sel = torch.zeros(completion_mask.shape[0], dtype=torch.bool)
        sel[self.rows] = True
        return sel[row_of]


def build_rows(tokenizer, rows: list[int], texts: list[str], completions: list[list[int]], pad_id: int) -> TeacherRows:
    if not rows:
        return TeacherRows([], None, [])
    ids = encode_prompts(tokenizer, texts)
    return TeacherRows(rows, sequence_batch(ids, [completions[r] for r in rows], pad_id), texts)


@torch.no_grad()
def score(model: torch.nn.Module, weights: TeacherWeights, rows: TeacherRows, device, precision: str) -> torch.Tensor:
    """Teacher logits [n_rows_tokens, V] (fp32) at the completion positions of `rows`."""
    if rows.batch is None:
        return torch.zeros((0, 0))
    was = model.training
    model.eval()
    try:
        with weights.applied():
            logits, _ = completion_logits(model, rows.batch, device, precision)
    finally:
        model.train(was)
    return logits.float()
