"""Generation: one engine interface (`engine.py`) with hf, generate, native and vllm backends."""
