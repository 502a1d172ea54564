"""Fine-tuning methods, one module each, registered by name in METHODS."""

from arena.methods.base import METHODS, Method, PeftMethod  # noqa: F401
from arena.methods import (  # noqa: F401  (imported for registration)
    adalora,
    boft,
    dora,
    full,
    ia3,
    loha,
    lokr,
    lora,
    oft,
    pissa,
    rslora,
    vera,
)

__all__ = ["METHODS", "Method", "PeftMethod"]
