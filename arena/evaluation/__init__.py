"""Evaluation: lm-eval suites (general + target), the two axes, base cache, continuous probes.

Public API (see docs/evaluation.md):
    evaluate_model(model, tokenizer, suites, target, limit, data_dir, seed, device, ...) -> dict
    base_scores(model_name, suites, target, limit, data_dir, seed, device, ...)         -> dict (cached)
    compare(base_result, tuned_result)                                                  -> dict
    make_step_probe(cfg_like, tokenizer, target, device, precision) -> probe(model, step) -> dict
"""

from arena.evaluation.api import base_scores, compare, evaluate_model
from arena.evaluation.step_probe import make_step_probe

__all__ = ["base_scores", "compare", "evaluate_model", "make_step_probe"]
