"""arena: a forgetting-analysis and benchmarking arena for LLM post-training."""

__version__ = "0.1.0"
