"""Evaluation: continuous probes (NLL, greedy answers) and lm-eval suites."""
