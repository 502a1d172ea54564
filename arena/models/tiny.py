"""`tiny`: a random 2-layer Llama with a byte-level BPE tokenizer trained on the spot.

Tests and quick demos need a model that loads in milliseconds and needs no download. The
tokenizer is trained with `tokenizers` on a small built-in corpus (deterministic), carries a
ChatML chat template like SmolLM2's, and is byte-level so any benchmark text encodes without
unknown tokens. Same seed -> same weights and same tokenizer, on every machine.
"""

from __future__ import annotations

import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_TEXT = (
    "The quick brown fox jumps over the lazy dog. What is the answer? The answer is 42. "
    "Question: A patient presents with fever and cough. Which of the following is the most likely diagnosis? "
    "Options: A. pneumonia B. asthma C. influenza D. bronchitis. Natalia sold clips to 48 of her friends. "
    "How many clips did she sell altogether in April and May? Write your answer in at most three sentences. "
    "Solve the problem step by step and put the final answer in a box. yes no maybe True False "
)


def _corpus(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = [_TEXT] * 20
    for _ in range(2000):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op = rng.choice("+-")
        lines.append(f"What is {a} {op} {b}? {a} {op} {b} = {a + b if op == '+' else a - b}")
    return lines


def build_tokenizer(vocab_size: int = 1024, seed: int = 0):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer, seed: int = 0, hidden: int = 64, layers: int = 2, heads: int = 4, intermediate: int = 128):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    # Seed locally so building the tiny model never perturbs the caller's RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.float()


def prepare_tiny(out: Path, seed: int = 0) -> Path:
    """Write the tiny model + tokenizer to `out` (used by `arena models prepare tiny`)."""
    tok = build_tokenizer(seed=seed)
    model = build_model(tok, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
