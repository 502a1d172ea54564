"""The generation engines (arena/generation/): equal outputs, continuous batching, stops, seeds,
adapters merged, lm-eval's generate_until through an engine, and the errors of unavailable engines."""

from __future__ import annotations

import pytest
import torch

from arena.errors import ConfigError
from arena.generation.engine import ENGINES, EngineOptions, build_engine, resolve_engine
from arena.generation.names import ENGINE_NAMES
from arena.generation.requests import GenRequest, Sampling
from arena.rollouts import encode_prompts

PROMPTS = ["What is 2 + 3?", "Name a colour.", "What is 10 - 4? Tell me now, quickly please.", "Hi",
           "Count from one to five, then stop.", "Why is the sky blue? Explain in one sentence."]


@pytest.fixture(scope="module")
def requests_(tiny_base):  # conftest's tiny model: never modified here (adapters go on a copy)
    ids = encode_prompts(tiny_base[1], PROMPTS)
    return [GenRequest(p, max_new_tokens=4 + 3 * i) for i, p in enumerate(ids)]


def _tokens(done):
    return [c.token_ids for c in done]


def test_engine_names_match_the_registry():
    assert set(ENGINE_NAMES) - {"auto"} == set(ENGINES.names())


@pytest.mark.parametrize("engine", ["hf", "native"])
def test_fp32_greedy_equals_model_generate(tiny_base, requests_, engine):
    model, tok = tiny_base
    ref = build_engine("generate", model, tok, precision="fp32").generate(requests_, Sampling(), 0)
    got = build_engine(engine, model, tok, precision="fp32").generate(requests_, Sampling(), 0)
    assert _tokens(got) == _tokens(ref)
    for r, c in zip(requests_, got):  # per-request caps: each ends at its own cap or at a stop token
        assert len(c.token_ids) == r.max_new_tokens if c.finish_reason == "length" else len(c.token_ids) <= r.max_new_tokens


def test_continuous_batching_gives_the_same_completions_as_one_batch(tiny_base, requests_):
    model, tok = tiny_base
    one = build_engine("native", model, tok, options=EngineOptions(max_slots=64)).generate(requests_, Sampling(), 0)
    few = build_engine("native", model, tok, options=EngineOptions(max_slots=2)).generate(requests_, Sampling(), 0)
    assert _tokens(one) == _tokens(few)


def test_adapters_are_merged_into_the_native_weights(tiny_base, tiny_lora, requests_):
    """A LoRA model with non-zero B: native (merged copy) == hf (peft forward); the model is untouched."""
    model, tok = tiny_base
    peft_model = tiny_lora
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    base_out = build_engine("hf", model, tok).generate(requests_, Sampling(), 0)
    ref = build_engine("hf", peft_model, tok).generate(requests_, Sampling(), 0)
    got = build_engine("native", peft_model, tok).generate(requests_, Sampling(), 0)
    assert _tokens(got) == _tokens(ref)
    assert _tokens(ref) != _tokens(base_out)  # the adapter changes the outputs, so the test can fail
    assert all(torch.equal(before[n], p) for n, p in peft_model.named_parameters())


def test_plain_lora_merge_equals_peft_merge_on_a_copy_bit_for_bit(tiny_base, tiny_lora):
    """weights._plain_lora_merge (W + ΔW on a clone, no deepcopy) gives the bits of peft's own merge
    of a copy for every LoRA layer; DoRA (a variant) is left to peft's merge; nothing is modified."""
    import copy

    from peft import LoraConfig, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    from arena.generation import weights

    layers = [m for m in tiny_lora.modules() if isinstance(m, BaseTunerLayer)]
    assert layers
    for m in layers:
        fast = weights._plain_lora_merge(m)
        assert fast is not None
        ref = weights._merged(m).weight
        assert torch.equal(fast, ref) and not torch.equal(fast, m.get_base_layer().weight)
        assert not m.merged
    dora = get_peft_model(copy.deepcopy(tiny_base[0]), LoraConfig(r=4, target_modules="all-linear", use_dora=True))
    assert all(weights._plain_lora_merge(m) is None for m in dora.modules() if isinstance(m, BaseTunerLayer))


def test_stop_strings_cut_at_the_completing_token(tiny_base, requests_):
    """One request per call (so the sampled stream is the same with and without the stop string):
    with the stop string set to a character of the free completion, it ends at the token that
    first completes that character in the decoded text."""
    model, tok = tiny_base
    s = Sampling(temperature=1.0)
    checked = 0
    for name in ("native", "hf"):
        eng = build_engine(name, model, tok)
        for r in requests_:
            free = eng.generate([GenRequest(r.prompt_ids, 12)], s, 5)[0]
            text = tok.decode(free.token_ids, skip_special_tokens=False)
            chars = [ch for ch in text[1:] if ch.strip() and ch != "\ufffd"]
            if len(free.token_ids) < 3 or not chars:
                continue
            stop = chars[0]
            j = next(j for j in range(len(free.token_ids)) if stop in tok.decode(free.token_ids[: j + 1], skip_special_tokens=False))
            done = eng.generate([GenRequest(r.prompt_ids, 12, (stop,))], s, 5)[0]
            assert done.token_ids == free.token_ids[: j + 1] and done.finish_reason == "stop_string"
            checked += 1
    assert checked >= 4


def test_stop_token_ends_a_native_completion_and_is_kept(tiny_base, requests_):
    model, tok = tiny_base
    eng = build_engine("native", model, tok)
    free = eng.generate(requests_, Sampling(), 0)
    eng.stop_ids = sorted({c.token_ids[1] for c in free if len(c.token_ids) > 2})
    done = eng.generate(requests_, Sampling(), 0)
    for f, d in zip(free, done):
        stops = [j for j, t in enumerate(f.token_ids) if t in eng.stop_ids]
        if stops:
            assert d.token_ids == f.token_ids[: stops[0] + 1] and d.finish_reason == "stop"
        else:
            assert d.token_ids == f.token_ids


def test_sampling_is_seeded_and_logprobs_are_the_tempered_ones(tiny_base, requests_):
    model, tok = tiny_base
    eng = build_engine("native", model, tok)
    s = Sampling(temperature=0.8, top_p=0.95)
    a, b, c = eng.generate(requests_, s, 3), eng.generate(requests_, s, 3), eng.generate(requests_, s, 4)
    assert _tokens(a) == _tokens(b) and _tokens(a) != _tokens(c)
    r, comp = requests_[-1], a[-1]
    seq = torch.tensor([r.prompt_ids + comp.token_ids])
    with torch.no_grad():
        logits = model(input_ids=seq).logits[0, len(r.prompt_ids) - 1: -1].float()
    ref = torch.log_softmax(logits / 0.8, -1).gather(-1, torch.tensor(comp.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(comp.logprobs), ref, atol=1e-4)


def test_bf16_native_agrees_with_autocast_hf_on_most_tokens(tiny_base, requests_):
    model, tok = tiny_base
    ref = build_engine("hf", model, tok, precision="bf16-autocast").generate(requests_, Sampling(), 0)
    got = build_engine("native", model, tok, precision="bf16-autocast").generate(requests_, Sampling(), 0)
    first = [a.token_ids[:2] == b.token_ids[:2] for a, b in zip(ref, got)]
    assert sum(first) >= len(first) - 1


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN not in this torch build")
def test_bf16_prepacked_weights_give_the_plain_linear_results(tiny_base, requests_):
    """The oneDNN-prepacked bf16 linear (native.prepacked_linear) is a speed path only: logits and
    greedy completions are bit-identical to the same decoder on plain F.linear (prepack off)."""
    import torch.nn.functional as F

    from arena.generation import native

    model, tok = tiny_base
    packed = native.NativeDecoder(model, precision="bf16-autocast")
    plain = native.NativeDecoder(model, precision="bf16-autocast", prepack=False)
    assert packed._matmul is native._onednn_linear and plain._matmul is F.linear
    h = torch.randn(3, 5, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    assert torch.equal(packed.logits(h), plain.logits(h))
    fast, slow = (build_engine("native", model, tok, precision="bf16-autocast", options=EngineOptions(prepack=p))
                  .generate(requests_, Sampling(), 0) for p in (True, False))
    assert _tokens(fast) == _tokens(slow)
    assert [c.logprobs for c in fast] == [c.logprobs for c in slow]


def test_prepacked_linear_stays_off_where_it_does_not_apply():
    import torch.nn.functional as F

    from arena.generation.native import prepacked_linear

    assert prepacked_linear(torch.float32, torch.device("cpu")) == (None, F.linear)
    assert prepacked_linear(torch.bfloat16, torch.device("meta")) == (None, F.linear)


def test_lm_eval_generate_until_through_the_engine_equals_hflm(tiny_base):
    from lm_eval.api.instance import Instance

    from arena.evaluation.lm_eval_model import counting_hflm_class

    model, tok = tiny_base
    ctxs = ["Question: what is 2 + 2?\nAnswer:", "List three fruits:", "Say hello.\n"]
    kw = [{"until": ["\n\n"], "max_gen_toks": 12, "do_sample": False}, {"until": ["."], "max_gen_toks": 8},
          {"until": ["\n\n"], "max_gen_toks": 12, "do_sample": False}]
    reqs = [Instance(request_type="generate_until", doc={}, arguments=(c, k), idx=i) for i, (c, k) in enumerate(zip(ctxs, kw))]
    out = {}
    for engine in ("hf", "native"):
        lm = counting_hflm_class()(pretrained=model, tokenizer=tok, batch_size=2, engine=engine)
        out[engine] = lm.generate_until(reqs)
        assert lm.counters["gen_calls"] >= 1 and lm.counters["gen_tokens"] > 0
        c = lm.counters
        if engine == "native":  # the scheduler's split of the generation seconds reaches the counters
            assert c["gen_decode_steps"] >= 1 and c["gen_prefill_seconds"] > 0 and c["gen_decode_seconds"] > 0
            assert c["gen_prefill_seconds"] + c["gen_decode_seconds"] <= c["gen_seconds"]
        else:
            assert c["gen_decode_steps"] == 0
    assert out["native"] == out["hf"]


def test_unknown_and_unavailable_engines_are_clear_errors(tiny_base):
    model, tok = tiny_base
    with pytest.raises(ConfigError, match=r"eval\.engine.*did you mean 'native'"):
        build_engine("natve", model, tok, field="eval.engine")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="vLLM needs a CUDA GPU"):
            build_engine("vllm", model, tok)
        assert resolve_engine("auto", model, torch.device("cpu")) == "native"


def test_unsupported_architecture_falls_back_to_hf_and_native_says_why():
    from transformers import GPT2Config, GPT2LMHeadModel

    from arena.models.loader import load_tokenizer

    tok = load_tokenizer("tiny")
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64)).eval()
    assert resolve_engine("auto", gpt2, torch.device("cpu")) == "hf"
    with pytest.raises(ConfigError, match="model type 'gpt2'"):
        build_engine("native", gpt2, tok)


@pytest.mark.parametrize("engine, message", [("natve", "did you mean 'native'"), ("vllm", "vLLM needs a CUDA GPU")])
def test_cli_engine_errors_name_the_flag_and_exit_2(engine, message, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    if engine == "vllm" and torch.cuda.is_available():
        pytest.skip("CUDA present: vllm may be available")
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out.json"
    r = subprocess.run([sys.executable, "-m", "arena.cli", "eval", "--model", "tiny", "--engine", engine, "--suite", "target",
                        "--target", "arith", "--limit", "2", "--no-proxies", "--no-cache", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "--engine" in r.stderr and message in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_length_buckets_decode_together_and_equal_model_generate(tiny_base):
    """Requests whose lengths fall in different buckets are decoded in one forward (each bucket's
    rows attending to its own cache); fp32 greedy completions still equal model.generate's."""
    model, tok = tiny_base
    long_prompt = encode_prompts(tok, ["Tell me a long story about the sea, the wind and a ship. " * 6])[0]
    short = encode_prompts(tok, ["Hi", "Name a colour."])
    reqs = [GenRequest(long_prompt, 30), GenRequest(short[0], 3), GenRequest(short[1], 5), GenRequest(short[0], 40)]
    eng = build_engine("native", model, tok, precision="fp32")
    got = eng.generate(reqs, Sampling(), 0)
    assert eng.scheduler.stats["buckets"] >= 2 and eng.scheduler.stats["peak_open"] >= 2
    ref = build_engine("generate", model, tok, precision="fp32").generate(reqs, Sampling(), 0)
    assert _tokens(got) == _tokens(ref)
    one = build_engine("native", model, tok, precision="fp32", options=EngineOptions(max_slots=1)).generate(reqs, Sampling(), 0)
    assert _tokens(one) == _tokens(ref)  # one slot: buckets cannot share a step, same answers
