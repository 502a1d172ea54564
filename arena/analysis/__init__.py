"""Forgetting diagnostics: pure metric functions (representation geometry, drift, spectra).

Nothing in this package loads a model; callers pass activations and weights as tensors or arrays.
"""
