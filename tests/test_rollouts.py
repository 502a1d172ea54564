"""The sampling module (arena/rollouts.py): seeding, EOS masks, behaviour log-probs, backends, prompts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from arena.errors import ConfigError
from arena.generation.requests import Sampling, sample_tokens
from arena.rollouts import (
    PromptPool,
    SamplingParams,
    completion_logits,
    encode_prompts,
    sample,
    sequence_batch,
)
from arena.targets.base import Example

CPU = torch.device("cpu")
PROMPTS = ["What is 2 + 3?", "What is 10 - 4? Tell me now."]


@pytest.fixture(scope="module")
def tiny():
    from arena.models.loader import load_model

    model, tok, _ = load_model("tiny")
    return model.eval(), tok


@pytest.fixture(scope="module")
def prompt_ids(tiny):
    return encode_prompts(tiny[1], PROMPTS)


@pytest.mark.parametrize("backend", ["hf", "generate", "native"])
def test_same_seed_same_samples_other_seed_other_samples(tiny, prompt_ids, backend):
    model, tok = tiny
    p = SamplingParams(temperature=1.0, max_new_tokens=10, n=3)
    a = sample(model, tok, prompt_ids, p, seed=7, backend=backend)
    b = sample(model, tok, prompt_ids, p, seed=7, backend=backend)
    c = sample(model, tok, prompt_ids, p, seed=8, backend=backend)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts
    assert not torch.equal(a.completion_ids, c.completion_ids)
    assert len(a) == 6 and a.group.tolist() == [0, 0, 0, 1, 1, 1]
    assert a.prompt_ids[0] == prompt_ids[0] and a.prompt_ids[3] == prompt_ids[1]
    # the n samples of one prompt differ (a random 751-token model)
    assert len({tuple(x) for x in a.completion_lists()[:3]}) > 1


def test_sampling_leaves_global_rng_and_model_mode_alone(tiny, prompt_ids):
    model, tok = tiny
    model.train()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sample(model, tok, prompt_ids, SamplingParams(max_new_tokens=4), seed=0, backend="hf")
    assert torch.equal(torch.rand(3), expected)
    assert model.training
    model.eval()


def test_backends_agree_on_samples_and_logprobs(tiny, prompt_ids):
    """Without top-p both backends draw with multinomial over softmax(z/T) from the same seeded
    stream: identical samples (with top-p the order of the candidates differs, so samples do too)."""
    model, tok = tiny
    p = SamplingParams(temperature=0.8, top_p=1.0, max_new_tokens=8, n=2)
    a = sample(model, tok, prompt_ids, p, seed=3, backend="hf")
    b = sample(model, tok, prompt_ids, p, seed=3, backend="generate")
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.allclose(a.logprobs, b.logprobs, atol=1e-5)


@pytest.mark.parametrize("backend", ["hf", "generate", "native"])
@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_behaviour_logprobs_equal_a_full_forward_recompute(tiny, prompt_ids, temperature, top_p, backend):
    """The log-probs returned with the samples are log softmax(z/T)[x] of the full forward the losses run."""
    model, tok = tiny
    p = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=12, n=2)
    r = sample(model, tok, prompt_ids, p, seed=1, backend=backend)
    b = sequence_batch(r.prompt_ids, r.completion_lists(), tok.pad_token_id)
    logits, targets = completion_logits(model, b, CPU, "fp32")
    lp = -F.cross_entropy(logits / temperature, targets, reduction="none")
    assert torch.allclose(lp, r.logprobs[r.completion_mask], atol=1e-5)
    assert torch.equal(targets, r.completion_ids[r.completion_mask])
    assert (r.logprobs[~r.completion_mask] == 0).all()


@pytest.mark.parametrize("backend", ["hf", "generate"])  # the native engine runs no lm_head module: tests/test_generation_engine.py
def test_stop_on_eos_mask_includes_eos_and_pads_after(tiny, prompt_ids, backend):
    """Rows 0 and 2 are forced to emit EOS first; the others run to max_new_tokens."""
    model, tok = tiny
    eos = tok.eos_token_id

    def force_eos(module, inputs, output):
        out = output.clone()
        out[0::2, ..., eos] += 1e4
        return out

    handle = model.lm_head.register_forward_hook(force_eos)
    try:
        r = sample(model, tok, prompt_ids, SamplingParams(max_new_tokens=6, n=2), seed=0, backend=backend)
    finally:
        handle.remove()
    assert r.lengths.tolist() == [1, 6, 1, 6]
    assert r.finished.tolist() == [True, False, True, False]
    assert r.completion_ids[0, 0].item() == eos and r.completion_mask[0].tolist() == [True] + [False] * 5
    assert (r.completion_ids[0, 1:] == tok.pad_token_id).all()
    assert r.texts[0] == ""  # special tokens are not decoded


def test_all_rows_finished_stops_early(tiny, prompt_ids):
    model, tok = tiny

    def force_eos(module, inputs, output):
        out = output.clone()
        out[..., tok.eos_token_id] += 1e4
        return out

    handle = model.lm_head.register_forward_hook(force_eos)
    try:
        r = sample(model, tok, prompt_ids, SamplingParams(max_new_tokens=50, n=2), seed=0, backend="hf")
    finally:
        handle.remove()
    assert r.completion_ids.shape == (4, 1) and r.finished.all()


def test_chunked_sampling_covers_every_sample(tiny, prompt_ids):
    model, tok = tiny
    r = sample(model, tok, prompt_ids, SamplingParams(max_new_tokens=5, n=3), seed=2, max_batch=4)
    assert len(r) == 6 and r.completion_ids.shape == (6, 5) and len(r.texts) == 6


def test_sample_next_greedy_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    tok, lp = sample_tokens(logits, Sampling(0.0, 1.0), None)
    assert tok.item() == 0 and lp.item() == pytest.approx(torch.log(torch.tensor(0.5)).item(), abs=1e-6)
    g = torch.Generator().manual_seed(0)
    # top_p 0.7 keeps {0, 1} (0.5 < 0.7 <= 0.8); top_p 0.45 keeps only token 0
    seen = {sample_tokens(logits, Sampling(1.0, 0.7), g)[0].item() for _ in range(200)}
    assert seen == {0, 1}
    assert {sample_tokens(logits, Sampling(1.0, 0.45), g)[0].item() for _ in range(50)} == {0}
    # the reported log-prob is the untruncated temperature-scaled one
    _, lp = sample_tokens(logits, Sampling(2.0, 0.5), g)
    want = torch.log_softmax(logits / 2.0, -1)[0, 0]
    assert lp.item() == pytest.approx(want.item(), abs=1e-6)


def test_sampling_params_validation():
    with pytest.raises(ConfigError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)
    with pytest.raises(ConfigError, match="objective.backend.*did you mean 'vllm'"):
        sample(None, None, [[1]], SamplingParams(), 0, backend="vllm-nope")


def test_sequence_batch_layout():
    b = sequence_batch([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], pad_id=0)
    assert b["input_ids"].tolist() == [[1, 2, 3, 5, 6], [4, 7, 8, 9, 0]]
    assert b["labels"].tolist() == [[-100, -100, -100, 5, 6], [-100, 7, 8, 9, -100]]
    assert b["completion_mask"].tolist() == [[True, True, False], [True, True, True]]
    assert (b["n_real"], b["n_completion"]) == (9, 5)


def test_prompt_pool_is_seeded_resumable_and_drops_long_prompts(tokenizer):
    examples = [Example(prompt=f"What is {i} + 1?", response="", answer=str(i + 1)) for i in range(10)]
    examples.append(Example(prompt="long " * 200, response="", answer="1"))
    examples.append(Example(prompt="no answer", response="", answer=None))
    pool = PromptPool(tokenizer, examples, max_prompt_tokens=40, need_answer=True)
    assert len(pool) == 10 and pool.n_dropped == 2
    a = pool.micro_batches(seed=0, step=3, per_step=4, n_micro=2)
    assert a == pool.micro_batches(seed=0, step=3, per_step=4, n_micro=2)  # any step, no replay
    assert [m for m, _ in a] == [0, 1] and [len(i) for _, i in a] == [2, 2]
    assert pool.micro_batches(seed=0, step=3, per_step=4, n_micro=2, only=range(1, 2)) == a[1:]  # a rank's share
    # one epoch (10 prompts) visits every prompt once
    first_epoch = pool.indices(seed=0, start=0, count=10)
    assert sorted(first_epoch) == list(range(10))
    assert pool.indices(seed=1, start=0, count=10) != first_epoch


def test_inverse_cdf_draw_has_the_categorical_law_and_never_draws_a_zero_weight():
    """The native engine's sampler: frequencies over 40k seeded draws match the weights (chi-square),
    zero-weight ids never appear, unnormalised rows work, the same seed gives the same draws."""
    from scipy.stats import chisquare

    from arena.generation.requests import inverse_cdf_draw

    w = torch.tensor([0.0, 0.4, 0.0, 0.25, 0.2, 0.1, 0.05, 0.0])
    rows = w.repeat(40_000, 1) * 3.0  # unnormalised on purpose
    g = torch.Generator().manual_seed(0)
    idx = inverse_cdf_draw(rows, g).squeeze(1)
    counts = torch.bincount(idx, minlength=8)
    assert counts[w == 0].sum() == 0
    nz = w > 0
    assert chisquare(counts[nz].numpy(), (w[nz] / w.sum() * len(idx)).numpy()).pvalue > 1e-3
    edge = torch.zeros(3, 5)
    edge[0, 4] = 1.0      # all mass on the last id
    edge[1, 2] = 1e-30    # one tiny nonzero weight
    edge[2, 0] = 1.0
    assert inverse_cdf_draw(edge, torch.Generator().manual_seed(1)).squeeze(1).tolist() == [4, 2, 0]
    a = inverse_cdf_draw(rows[:64], torch.Generator().manual_seed(5))
    assert torch.equal(a, inverse_cdf_draw(rows[:64], torch.Generator().manual_seed(5)))


def test_sample_tokens_inverse_cdf_respects_top_p_and_rejects_unknown_draws():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    seen = {sample_tokens(logits, Sampling(1.0, 0.7), g, draw="inverse_cdf")[0].item() for _ in range(200)}
    assert seen == {0, 1}
    with pytest.raises(ValueError, match="draw must be"):
        sample_tokens(logits, Sampling(1.0, 1.0), g, draw="gumbel")
