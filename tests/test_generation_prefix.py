"""Shared-prefix prefill (arena/generation/prefix.py): the grouping rule, equal completions with and
without sharing (fp32, also with a merged adapter and under sampling), the prefill work it saves,
and the memory budget's fallback."""

from __future__ import annotations

import pytest
import torch

from arena.generation.engine import EngineOptions, build_engine
from arena.generation.prefix import PrefixStore, common_prefix, shared_prefixes
from arena.generation.requests import GenRequest, Sampling
from arena.generation.scheduler import Scheduler, SchedulerOptions
from arena.rollouts import encode_prompts


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0


def test_groups_are_runs_sharing_at_least_min_tokens():
    shot_a, shot_b = list(range(100, 140)), list(range(200, 240))
    prompts = [shot_a + [1, 2], shot_b + [5], shot_a + [3], [7, 8, 9], shot_b + [6, 6], shot_a + [1, 9]]
    group, lengths = shared_prefixes(prompts, min_shared=32)
    assert group[3] == -1  # shares nothing
    assert group[0] == group[2] == group[5] != group[1] == group[4] != -1
    assert lengths[group[0]] == 40 and lengths[group[1]] == 40  # the common prefix of the whole run, not the pair 0/5's 41
    pair = shared_prefixes(prompts, min_shared=41)  # only prompts 0 and 5 share 41 tokens
    assert pair[0] == [0, -1, -1, -1, -1, 0] and pair[1] == [41]
    assert shared_prefixes(prompts, min_shared=42)[0] == [-1] * 6  # below the threshold nothing is shared
    assert shared_prefixes(prompts, min_shared=0)[0] == [-1] * 6


def test_identical_prompts_keep_one_token_to_prefill():
    group, lengths = shared_prefixes([[1] * 40, [1] * 40, [1] * 40], min_shared=8)
    assert group == [0, 0, 0] and lengths == [39]  # the last token still runs: its logits start decoding
    assert shared_prefixes([[1] * 40, [1] * 41], min_shared=8)[1] == [39]


def _few_shot_requests(tok, n_docs=4, n_tasks=2):
    """Few-shot style prompts: per task a long shared demonstration, then a short question."""
    shots = [" ".join(f"Q: what is {a} plus {a + t}? A: {2 * a + t}." for a in range(12)) for t in range(n_tasks)]
    texts = [f"{shots[t]} Q: what is {d} plus {d + 3}? A:" for t in range(n_tasks) for d in range(n_docs)]
    ids = [tok(t)["input_ids"] for t in texts]
    return [GenRequest(p, max_new_tokens=6) for p in ids]


def _native(model, tok, prefix_min, precision="fp32"):
    eng = build_engine("native", model, tok, precision=precision, options=EngineOptions(max_slots=3))
    eng.scheduler.opt.prefix_min = prefix_min
    return eng


def test_sharing_gives_the_same_fp32_completions_and_saves_prefill(tiny_base):
    model, tok = tiny_base
    reqs = _few_shot_requests(tok)
    plain = _native(model, tok, 0).generate(reqs, Sampling(), 0)
    eng = _native(model, tok, 32)
    shared = eng.generate(reqs, Sampling(), 0)
    ref = build_engine("generate", model, tok, precision="fp32").generate(reqs, Sampling(), 0)
    assert [c.token_ids for c in shared] == [c.token_ids for c in plain] == [c.token_ids for c in ref]
    for a, b in zip(shared, plain):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    st = eng.scheduler.prefixes.stats
    assert st["groups"] == 2 and st["uncached_groups"] == 0
    total = sum(len(r.prompt_ids) for r in reqs)
    run = total - st["saved_tokens"] + st["prefill_tokens"]
    assert run < 0.5 * total  # each demonstration is prefilled once, not four times


def test_sharing_with_a_merged_adapter_and_under_sampling(tiny_base, tiny_lora):
    _, tok = tiny_base
    pm = tiny_lora
    reqs = _few_shot_requests(tok, n_docs=3)
    greedy = [c.token_ids for c in _native(pm, tok, 32).generate(reqs, Sampling(), 0)]
    assert greedy == [c.token_ids for c in build_engine("hf", pm, tok).generate(reqs, Sampling(), 0)]
    s = Sampling(temperature=1.0)
    a = [c.token_ids for c in _native(pm, tok, 32).generate(reqs, s, 7)]
    assert a == [c.token_ids for c in _native(pm, tok, 0).generate(reqs, s, 7)]  # same stream: same logits
    assert a == [c.token_ids for c in _native(pm, tok, 32).generate(reqs, s, 7)]


def test_group_samples_of_one_prompt_share_it(tiny_base):
    """GRPO's G samples of a prompt: the prompt is prefilled once per group, not G times."""
    model, tok = tiny_base
    ids = encode_prompts(tok, ["Count from one to five, then stop, and say nothing else at all please."])[0]
    reqs = [GenRequest(ids, max_new_tokens=5) for _ in range(4)]
    eng = _native(model, tok, 8)
    eng.generate(reqs, Sampling(temperature=1.0), 3)
    st = eng.scheduler.prefixes.stats
    assert st["groups"] == 1 and st["saved_tokens"] == 4 * (len(ids) - 1) and st["prefill_tokens"] == len(ids) - 1


def test_a_prefix_over_the_budget_is_prefilled_in_full(tiny_base):
    model, tok = tiny_base
    reqs = _few_shot_requests(tok, n_docs=2, n_tasks=1)
    eng = build_engine("native", model, tok, precision="fp32")
    store = PrefixStore(eng.decoder, [r.prompt_ids for r in reqs], 32, budget_mb=0)
    assert store.prefixes_for([0, 1]) == [None, None] and store.stats["uncached_groups"] == 1
    assert store.shared_length(0) == 0
    sched = Scheduler(eng.decoder, SchedulerOptions(prefix_cache_mb=0))
    from arena.generation.requests import StopChecker

    gen = torch.Generator().manual_seed(0)
    out = sched.run(reqs, Sampling(), StopChecker(tok, eng.stop_ids), gen)
    assert [c.token_ids for c in out] == [c.token_ids for c in _native(model, tok, 32).generate(reqs, Sampling(), 0)]
    assert sched.prefixes.stats["saved_tokens"] == 0


def test_prefixes_are_freed_after_their_last_member(tiny_base):
    model, tok = tiny_base
    reqs = _few_shot_requests(tok, n_docs=2, n_tasks=2)
    eng = build_engine("native", model, tok, precision="fp32")
    store = PrefixStore(eng.decoder, [r.prompt_ids for r in reqs], 32)
    store.prefixes_for([0])
    assert store._held > 0
    for i in range(4):
        store.prefixes_for([i])
        store.release(i)
    assert store._held == 0 and not store._kv
