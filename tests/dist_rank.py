"""A torchrun rank for tests/test_distributed.py: arena's CLI with the tests' GRPO reward registered.

`python -m torch.distributed.run ... tests/dist_rank.py train --config C` is what `arena train
--nproc N` runs on every rank (`-m arena train ...`), plus the reward the tiny random model can earn.
"""

import sys

from arena.cli import main
from arena.rewards import REWARDS


def _digit_share(completion: str, answer: str) -> float:
    s = completion.replace(" ", "")
    return sum(c.isdigit() for c in s) / max(1, len(s))


if "test_digits" not in REWARDS:
    REWARDS.register("test_digits")(_digit_share)

sys.exit(main())
