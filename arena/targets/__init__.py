"""Targets: what a run trains on and is scored on. Importing this package registers all of them."""

from arena.targets.base import TARGETS, Example, Target

# Imported for their side effect: each module registers its target in TARGETS.
from arena.targets import arith, math, medical  # noqa: F401,E402

__all__ = ["TARGETS", "Example", "Target"]
