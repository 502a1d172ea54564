"""What a target is: train examples, held-out examples and the lm-eval tasks that score it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional


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


class Target:
    """Base class of a registered target. Subclasses set `name`, `description`, `Options`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

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

    def describe(self) -> dict:
        return {"name": self.name, "description": self.description}


@dataclass
class CappedOptions:
    """Options shared by file-backed targets: a cap on training examples after the seeded shuffle."""

    max_train_examples: Optional[int] = 2000  # None: every training example

    def __post_init__(self):
        from arena.errors import ConfigError

        if self.max_train_examples is not None and self.max_train_examples <= 0:
            raise ConfigError("max_train_examples", self.max_train_examples, "must be a positive integer or null (all)")


class FileTarget(Target):
    """A target read from files in the data folder; subclasses list them in `_files()`."""

    def _files(self) -> list[str]:
        raise NotImplementedError

    def _path(self, rel: str):
        from arena.data.io import data_file

        return data_file(self.data_dir, rel, needed_by=f"target {self.name!r}")

    def check_data(self) -> None:
        from arena.data.io import check_files

        check_files(self.data_dir, self._files(), needed_by=f"target {self.name!r}")
