"""What a target is: train examples, held-out examples, and what it knows about being scored.

A target class owns everything that names it: the lm-eval tasks that score it (`eval_tasks`, each
a YAML file under arena/evaluation/taskdefs), its default RLVR reward (`default_reward`, a name in
`arena.rewards.REWARDS`), the shape of its final answers (`answer_format`, a name in
`arena.targets.answers.ANSWER_FORMATS`, read by the held-out greedy probe) and the conversions of
its benchmarks' raw files for lm-eval (`conversions`). Adding a target is one module here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from arena.data.io import check_files, data_file
from arena.errors import ConfigError, DataError
from arena.schema import to_dict


@dataclass
class Example:
    """One chat turn: the user prompt and the assistant response the SFT loss is taken on.

    `answer` is the verifiable final answer (a number, an option letter) when the target has one;
    rewards for RLVR and greedy-answer probes compare against it.
    """

    prompt: str
    response: str
    answer: Optional[str] = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Conversion:
    """Raw benchmark files -> the rows a stock lm-eval task reads (cached as JSONL by
    `arena.evaluation.convert`; a task YAML names it with `convert: {target, conversion}`)."""

    sources: dict  # key -> data file relative to the data folder; the files' hashes name the output
    records: Callable[..., list]  # (*source paths, in `sources` order) -> rows (dicts)
    version: int = 1  # bump when `records` changes what it writes


class Target:
    """Base class of a registered target. Subclasses set `name`, `description`, `Options`,
    `default_reward` and `answer_format`, and `conversions` when a benchmark needs one."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    default_reward: ClassVar[Optional[str]] = None  # reward for `objective.reward: auto` (None: none)
    answer_format: ClassVar[str] = "number"  # how a greedy reply's final answer is read
    conversions: ClassVar[dict] = {}  # conversion name -> Conversion
    # how `arena ilp` re-tests its training samples: "verify" (pass@N of sampled replies, the reward)
    # where replies are short and checkable; "mc" (multiple choice by log-likelihood, no generation)
    ilp_probe: ClassVar[str] = "mc"

    @dataclass
    class Options:
        pass

    def __init__(self, options: Any, data_dir: Optional[str]):
        self.options = options
        self.data_dir = data_dir

    def check_data(self) -> None:
        """Raise DataError naming the missing file and how to provide it. Cheap: no full parse."""

    def train_examples(self, seed: int) -> list[Example]:
        raise NotImplementedError

    def heldout_examples(self, n: int, seed: int) -> list[Example]:
        raise NotImplementedError

    def eval_tasks(self) -> list[str]:
        return []

    def cpt_documents(self) -> list[str]:
        """Raw-text documents of the target's domain, for `objective.documents: target` (the cpt
        objective, arena/objectives/cpt.py). A target with a corpus overrides this."""
        raise ConfigError("objective.documents", "target", f"target {self.name} has no raw-text corpus; give a file")

    def describe(self) -> dict:
        return {"name": self.name, "description": self.description}


@dataclass
class CappedOptions:
    """Options shared by file-backed targets: a cap on training examples after the seeded shuffle."""

    max_train_examples: Optional[int] = 2000  # None: every training example

    def __post_init__(self):
        if self.max_train_examples is not None and self.max_train_examples <= 0:
            raise ConfigError("max_train_examples", self.max_train_examples, "must be a positive integer or null (all)")


class FileTarget(Target):
    """A target read from files in the data folder; subclasses list them in `_files()`."""

    def _files(self) -> list[str]:
        raise NotImplementedError

    def _path(self, rel: str):
        return data_file(self.data_dir, rel, needed_by=f"target {self.name!r}")

    def check_data(self) -> None:
        check_files(self.data_dir, self._files(), needed_by=f"target {self.name!r}")

    def describe(self) -> dict:
        """Name, options, data folder and eval tasks, then `describe_data()` — or the data error."""
        info = {"name": self.name, "description": self.description, "options": to_dict(self.options),
                "data_dir": self.data_dir, "eval_tasks": self.eval_tasks()}
        try:
            self.check_data()
        except DataError as e:
            return {**info, "error": str(e)}
        return {**info, **self.describe_data()}

    def describe_data(self) -> dict:
        """{"files", "train": {"pool", "size"}, "heldout": {"source", "pool"}} from the files (checked)."""
        raise NotImplementedError

    def train_size(self, pool: dict[str, int]) -> dict:
        """The train summary: the pool per source and the size after the `max_train_examples` cap."""
        total = sum(pool.values())
        cap = self.options.max_train_examples
        return {"pool": pool, "size": total if cap is None else min(cap, total)}
