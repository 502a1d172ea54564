"""Evaluation hygiene for in-training use: restore the caller's RNG streams and train/eval mode.

An evaluation every N steps must not change the training run it observes: lm-eval and generation
draw from Python's, NumPy's and torch's generators and switch the model to eval mode.
"""

from __future__ import annotations

import random


class PreservedState:
    """Restore the caller's RNG streams and train/eval mode around an evaluation."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        import numpy as np
        import torch

        self.training = self.model.training if self.model is not None else None
        self.py = random.getstate()
        self.np = np.random.get_state()
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        return self

    def __exit__(self, *exc):
        import numpy as np
        import torch

        random.setstate(self.py)
        np.random.set_state(self.np)
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        if self.model is not None:
            self.model.train(self.training)
        return False
