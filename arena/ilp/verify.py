"""The verifiable probe: greedy correctness and pass@N of N sampled replies, scored by the target's reward.

pass@N here is the paper's (ILP §3.1): the share of the N samples that are correct, not the
"at least one of N" of code benchmarks. All replies come from one generation engine call
(arena/generation: the native engine on CPU), seeded, so the same run and seed give the same N replies.
"""

from __future__ import annotations

from arena.generation.engine import EngineOptions, build_engine
from arena.generation.requests import GenRequest, Sampling
from arena.rollouts import encode_prompts


def verify(model, tokenizer, examples, reward_fn, n: int, temperature: float, max_new_tokens: int, seed: int,
           device, precision: str, engine: str = "auto") -> list[dict]:
    """Per example: {"greedy": bool, "pass": share of n samples rewarded 1, "reply": the greedy reply}."""
    model.eval()
    eng = build_engine(engine, model, tokenizer, device=device, precision=precision, options=EngineOptions(),
                       field="ilp.engine")
    ids = encode_prompts(tokenizer, [e.prompt for e in examples])
    greedy = eng.generate([GenRequest(p, max_new_tokens) for p in ids], Sampling(), seed)
    sampled = eng.generate([GenRequest(p, max_new_tokens) for p in ids for _ in range(n)],
                           Sampling(temperature=temperature), seed)
    g_text = tokenizer.batch_decode([c.token_ids for c in greedy], skip_special_tokens=True)
    s_text = tokenizer.batch_decode([c.token_ids for c in sampled], skip_special_tokens=True)
    out = []
    for i, ex in enumerate(examples):
        rewards = [reward_fn(t, ex.answer) >= 1.0 for t in s_text[i * n:(i + 1) * n]]
        out.append({"greedy": reward_fn(g_text[i], ex.answer) >= 1.0, "pass": sum(rewards) / n, "reply": g_text[i]})
    return out
