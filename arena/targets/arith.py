"""The "arith" target: generated, verifiable arithmetic that a 135M model learns in minutes on CPU.

At 135M parameters GSM8K accuracy sits at the floor, so a CPU run needs a target whose accuracy
actually moves (see docs/design.md, "Pilot"). No data files are read.

The split is fixed by `data_seed`, not by the training seed: the train pool is drawn from one seeded
stream and held-out problems from another stream with every train operand tuple rejected. So the
held-out set is disjoint from training whatever seeds a sweep uses, and `seed` only orders examples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from arena.components import TARGETS
from arena.data.io import rand_int, stable_shuffle
from arena.errors import ConfigError, suggest
from arena.schema import to_dict
from arena.targets.base import Example, Target

OPS = ("+", "-", "*")
# Train pools may use at most this share of all distinct problems, so held-out problems remain.
MAX_TRAIN_SHARE = 0.8


def problem_space(max_operand: int, ops: list[str], max_mul_operand: int) -> int:
    """Number of distinct (a, op, b) problems: subtraction keeps a >= b, so results are never negative."""
    m, k = max_operand + 1, min(max_operand, max_mul_operand) + 1
    sizes = {"+": m * m, "-": m * (m + 1) // 2, "*": k * k}
    return sum(sizes[op] for op in set(ops))


def draw_problem(rng: random.Random, ops: list[str], max_operand: int, max_mul_operand: int) -> tuple[int, str, int]:
    op = ops[rand_int(rng, 0, len(ops) - 1)]
    hi = min(max_operand, max_mul_operand) if op == "*" else max_operand
    a, b = rand_int(rng, 0, hi), rand_int(rng, 0, hi)
    if op == "-" and b > a:
        a, b = b, a
    return a, op, b


def solve(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


@TARGETS.register("arith")
class ArithTarget(Target):
    name = "arith"
    description = "generated integer arithmetic (a op b), answers verifiable; no data files"
    default_reward = "arith"
    answer_format = "number"
    ilp_probe = "verify"

    @dataclass
    class Options:
        n_train: int = 4000
        max_operand: int = 99  # operands are drawn from 0..max_operand
        ops: list[str] = field(default_factory=lambda: ["+", "-"])
        max_mul_operand: int = 12  # "*" uses operands 0..min(max_operand, this): times tables, not long multiplication
        prompt_style: Literal["plain", "instruction"] = "plain"
        data_seed: int = 0  # fixes which problems are train and which held-out

        def __post_init__(self):
            if self.n_train <= 0:
                raise ConfigError("n_train", self.n_train, "must be a positive integer")
            if self.max_operand < 2:
                raise ConfigError("max_operand", self.max_operand, "must be >= 2")
            if self.max_mul_operand < 2:
                raise ConfigError("max_mul_operand", self.max_mul_operand, "must be >= 2")
            if not self.ops:
                raise ConfigError("ops", self.ops, f"must list at least one of {', '.join(OPS)}")
            for op in self.ops:
                if op not in OPS:
                    raise ConfigError("ops", op, f"allowed: {', '.join(OPS)}{suggest(str(op), OPS)}")
            if len(set(self.ops)) != len(self.ops):
                raise ConfigError("ops", self.ops, "must not repeat an operator")
            space = problem_space(self.max_operand, self.ops, self.max_mul_operand)
            limit = int(space * MAX_TRAIN_SHARE)
            if self.n_train > limit:
                raise ConfigError("n_train", self.n_train,
                                  f"must be <= {limit} ({MAX_TRAIN_SHARE:.0%} of the {space} distinct problems for "
                                  f"max_operand={self.max_operand}, ops={self.ops}) so held-out problems remain; "
                                  f"raise max_operand or lower n_train")

    def __init__(self, options, data_dir=None):
        super().__init__(options, data_dir)
        self._train_pool: list[tuple[int, str, int]] | None = None

    def check_data(self) -> None:
        """Nothing to check: the problems are generated."""

    def _space(self) -> int:
        o = self.options
        return problem_space(o.max_operand, o.ops, o.max_mul_operand)

    def _draw_unique(self, stream: str, n: int, exclude: set) -> list[tuple[int, str, int]]:
        """`n` distinct problems from the seeded `stream`, skipping `exclude` (rejection sampling)."""
        o = self.options
        rng = random.Random(f"arith/{stream}/{o.data_seed}")
        seen, out = set(exclude), []
        n = min(n, self._space() - len(seen))
        while len(out) < n:
            p = draw_problem(rng, o.ops, o.max_operand, o.max_mul_operand)
            if p not in seen:
                seen.add(p)
                out.append(p)
        return out

    def _train(self) -> list[tuple[int, str, int]]:
        if self._train_pool is None:
            self._train_pool = self._draw_unique("train", self.options.n_train, set())
        return self._train_pool

    def _example(self, p: tuple[int, str, int], split: str) -> Example:
        a, op, b = p
        expr = f"{a} {op} {b}"
        if self.options.prompt_style == "plain":
            prompt = f"What is {expr}?"
        else:
            prompt = f"Compute {expr}. Reply with the equation and its result, like '2 + 3 = 5'."
        result = str(solve(a, op, b))
        return Example(prompt=prompt, response=f"{expr} = {result}", answer=result,
                       meta={"source": f"arith_{split}", "a": a, "op": op, "b": b})

    def train_examples(self, seed: int) -> list[Example]:
        """The fixed pool of n_train distinct problems, in an order set by `seed`."""
        return [self._example(p, "train") for p in stable_shuffle(self._train(), seed)]

    def heldout_examples(self, n: int, seed: int) -> list[Example]:
        """`n` distinct problems from a separate stream per `seed`, none of them in the train pool."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return [self._example(p, "heldout") for p in self._draw_unique(f"heldout/{seed}", n, set(self._train()))]

    def eval_tasks(self) -> list[str]:
        return ["arith"]

    def describe(self) -> dict:
        space = self._space()
        return {"name": self.name, "description": self.description, "options": to_dict(self.options),
                "data_dir": None, "files": {}, "eval_tasks": self.eval_tasks(),
                "train": {"pool": {"generated": self.options.n_train}, "size": self.options.n_train},
                "heldout": {"source": "generated", "pool": space - self.options.n_train},
                "problem_space": space}
