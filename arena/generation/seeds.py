"""Seeds derived from integers (run seed, step, micro-batch, chunk): stable across processes."""

from __future__ import annotations

import numpy as np


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SeedSequence, so nearby inputs give unrelated seeds)."""
    return int(np.random.SeedSequence([int(p) % 2**32 for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))
