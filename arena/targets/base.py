"""What a target is: train examples, held-out examples and the lm-eval tasks that score it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from arena.registry import Registry


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


TARGETS: Registry[type[Target]] = Registry("target")
