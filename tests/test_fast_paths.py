"""The training core's CPU fast paths: skip-sampled dropout, cached frozen casts, padding-free
packing with per-document attention. Each must give the same law / the same numbers as the stock
path it replaces; these tests compare against the stock path directly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from arena.experiment import run_training
from arena.training.cast_cache import FrozenCastCache
from arena.training.dropout import MAX_SKIP_P, SkipDropout, bernoulli_drop_indices, skip_dropout, use_skip_dropout
from arena.training.packing import IGNORE, TokenizedExample, pack, padding_free_batch
from arena.training.varlen import cu_seq_lens, packed_attention, varlen_sdpa_forward

QUIET = {"log": lambda s: None}


# -- skip-sampled dropout -------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.05, 0.2])
def test_drop_indices_have_the_bernoulli_law(p):
    """Per-position drop frequency, total count and adjacent-pair frequency match i.i.d. Bernoulli(p)."""
    gen = torch.Generator().manual_seed(0)
    n, reps = 2000, 400
    hits = torch.zeros(n)
    pairs, counts = 0, []
    for _ in range(reps):
        idx = bernoulli_drop_indices(n, p, generator=gen)
        assert idx.dtype == torch.int64 and bool((idx[1:] > idx[:-1]).all())  # sorted, no repeats
        assert int(idx.min()) >= 0 and int(idx.max()) < n
        m = torch.zeros(n, dtype=torch.bool)
        m[idx] = True
        hits += m
        pairs += int((m[1:] & m[:-1]).sum())
        counts.append(idx.numel())
    total = n * reps
    # total drops ~ Binomial(total, p): within 5 sigma
    assert abs(sum(counts) - total * p) < 5 * math.sqrt(total * p * (1 - p))
    # the first, middle and last positions are dropped as often as any (no edge bias from the gaps)
    for lo, hi in ((0, 50), (975, 1025), (1950, 2000)):
        k, trials = float(hits[lo:hi].sum()), (hi - lo) * reps
        assert abs(k - trials * p) < 5 * math.sqrt(trials * p * (1 - p)), (lo, k / trials)
    # independence of neighbours: P(both dropped) = p^2
    np_ = (n - 1) * reps
    assert abs(pairs - np_ * p * p) < 5 * math.sqrt(np_ * p * p)


def test_drop_indices_draw_more_when_a_chunk_falls_short():
    """With 7 gaps per chunk the sampler must loop ~36 times; the pattern is the same law."""
    gen = torch.Generator().manual_seed(1)
    counts = []
    for _ in range(200):
        idx = bernoulli_drop_indices(5000, 0.05, generator=gen, chunk=7)
        assert bool((idx[1:] > idx[:-1]).all()) and int(idx.min()) >= 0 and int(idx.max()) < 5000
        counts.append(idx.numel())
    total = 5000 * 200
    assert abs(sum(counts) - total * 0.05) < 5 * math.sqrt(total * 0.05 * 0.95)


def test_skip_dropout_values_gradient_and_seed():
    x = torch.randn(64, 96, requires_grad=True)
    torch.manual_seed(3)
    y = skip_dropout(x, 0.1)
    dropped = y == 0
    assert 0.02 < float(dropped.float().mean()) < 0.25
    torch.testing.assert_close(y[~dropped], x[~dropped] * (1 / 0.9), rtol=0, atol=0)  # as torch: x·(1/(1-p))
    g = torch.randn_like(y)
    y.backward(g)
    torch.testing.assert_close(x.grad, torch.where(dropped, 0.0, g * (1 / 0.9)), rtol=0, atol=0)
    torch.manual_seed(3)
    assert torch.equal(skip_dropout(x, 0.1), y)  # torch's seeded generator drives it
    # eval mode and p = 0 are the identity; large p uses torch's kernel (same law, inverted scaling)
    assert skip_dropout(x, 0.1, training=False) is x and skip_dropout(x, 0.0) is x
    big = skip_dropout(x.detach(), MAX_SKIP_P + 0.25)
    kept = big != 0
    torch.testing.assert_close(big[kept], x.detach()[kept] / (1 - MAX_SKIP_P - 0.25))


def test_skip_dropout_writes_the_autocast_dtype_when_it_feeds_a_matmul():
    """bf16 output == bf16(x·s) with the same zeros: what the consumer's autocast cast would produce."""
    x = torch.randn(32, 48, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(5)
        y = skip_dropout(x, 0.1, feeds_autocast_matmul=True)
        torch.manual_seed(5)
        ref = skip_dropout(x, 0.1)  # fp32 path, same mask
    assert y.dtype == torch.bfloat16 and ref.dtype == torch.float32
    assert torch.equal(y, ref.to(torch.bfloat16))
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad, torch.where(ref == 0, 0.0, 1 / 0.9).float())
    # outside autocast the flag changes nothing
    assert skip_dropout(x, 0.1, feeds_autocast_matmul=True).dtype == torch.float32


def test_use_skip_dropout_swaps_peft_dropouts_and_restores(tiny_base):
    import copy

    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(tiny_base[0]), LoraConfig(r=4, lora_dropout=0.1, target_modules="all-linear"))
    n_lora = sum(1 for n, m in model.named_modules() if n.endswith("lora_dropout"))
    before = {n: m for n, m in model.named_modules() if type(m) is nn.Dropout}
    restore = use_skip_dropout(model)
    assert restore.count == n_lora == len(before) > 0
    skip = [m for m in model.modules() if isinstance(m, SkipDropout)]
    assert len(skip) == n_lora and all(m.p == 0.1 and m.feeds_autocast_matmul for m in skip)
    assert not any(type(m) is nn.Dropout for m in model.modules())
    restore()
    after = {n: m for n, m in model.named_modules() if type(m) is nn.Dropout}
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


# -- cached frozen casts --------------------------------------------------------------------------

def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids, labels=ids, use_cache=False)
    out.loss.backward()
    return out.loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("method", ["lora", "dora", "oft", "vera"])
def test_cast_cache_is_bit_identical_under_autocast(tiny_run_config, method):
    from arena.components import build_components
    from arena.runs import load_and_wrap

    cfg = tiny_run_config(method=method)
    m, _, _ = build_components(cfg, check_data=False)
    model, tok, _ = load_and_wrap(cfg, m, torch.device("cpu"))
    model.eval()  # no dropout: the comparison is about casts only
    ids = torch.randint(5, 200, (2, 24))
    loss0, grads0 = _loss_and_grads(model, ids)
    cache = FrozenCastCache(model)
    assert len(cache) > 0
    loss1, grads1 = _loss_and_grads(model, ids)
    assert torch.equal(loss0, loss1)
    assert all(torch.equal(a, b) for a, b in zip(grads0, grads1))
    # a frozen weight changed in place is re-cast, not served stale
    lin = cache.modules[0]
    x = torch.randn(3, lin.in_features)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = lin(x)
        with torch.no_grad():
            lin.weight.mul_(2)
        b = lin(x)
    assert not torch.equal(a, b)
    cache.remove()
    assert all("forward" not in vars(m_) for m_ in model.modules())


def test_cast_cache_leaves_fp32_and_trainable_weights_alone():
    lin = nn.Linear(8, 4)
    FrozenCastCache(lin)
    x = torch.randn(2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(lin(x), nn.functional.linear(x, lin.weight, lin.bias))  # trainable: stock path
    lin.weight.requires_grad_(False)
    assert torch.equal(lin(x), nn.functional.linear(x, lin.weight, lin.bias))  # no autocast: fp32


# -- padding-free layout with per-document attention ----------------------------------------------

def test_padding_free_batch_and_boundaries():
    ex = [TokenizedExample([1, 2, 3, 4], 2), TokenizedExample([5, 6, 7], 1), TokenizedExample([8, 9], 0)]
    p = pack(ex, 6, pad_id=0, seed=0)
    ids, labels, pos = padding_free_batch(p.input_ids, p.labels, p.position_ids, p.n_real)
    assert ids.shape == (1, 9) and int(p.n_real.sum()) == 9
    expect = [t for r in range(p.rows) for t in p.input_ids[r, : int(p.n_real[r])].tolist()]
    assert ids[0].tolist() == expect  # rows end to end, padding gone, order kept
    cu = cu_seq_lens(pos)
    assert cu.dtype == torch.int32 and cu[0] == 0 and cu[-1] == 9 and len(cu) == 4
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        assert pos[0, s:e].tolist() == list(range(e - s))
        assert labels[0, s] == IGNORE  # even n_prompt=0: a document's first token is never a label
    with pytest.raises(ValueError, match="start a document"):
        cu_seq_lens(torch.tensor([[1, 2, 0, 1]]))


def test_varlen_attention_rejects_bad_boundaries():
    q = torch.randn(1, 2, 5, 4)

    class M(nn.Module):
        training = False

    with pytest.raises(ValueError, match="partition"):
        varlen_sdpa_forward(M(), q, q, q, None, cu_seq_lens_q=torch.tensor([0, 3, 4], dtype=torch.int32))
    with pytest.raises(ValueError, match="cu_seq_lens_q"):
        varlen_sdpa_forward(M(), q, q, q, None)


@torch.no_grad()
def test_padding_free_forward_equals_each_document_alone(tiny_base, tokenizer):
    from arena.objectives.losses import label_logits
    from arena.targets.arith import ArithTarget as Arith
    from arena.training.packing import tokenize_examples

    model, _ = tiny_base
    tok_ex, _ = tokenize_examples(tokenizer, Arith(Arith.Options(n_train=64), None).train_examples(0), 64)
    p = pack(tok_ex, 64, tokenizer.pad_token_id, seed=0)
    rows = torch.arange(4)
    ids, labels, pos = padding_free_batch(p.input_ids[rows], p.labels[rows], p.position_ids[rows], p.n_real[rows])
    cu = cu_seq_lens(pos)
    assert len(cu) - 1 >= 6  # several documents per row
    with packed_attention(model):
        logits = model(input_ids=ids, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu, use_cache=False).logits[0]
    assert model.config._attn_implementation == "sdpa"  # switched back after the block
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        alone = model(input_ids=ids[:, s:e], use_cache=False).logits[0]
        torch.testing.assert_close(logits[s:e], alone, rtol=0, atol=1e-4)
    # the same loss as the rows layout with its block-diagonal mask
    rl, rt = label_logits(model, p.input_ids[rows], p.labels[rows], position_ids=p.position_ids[rows])
    with packed_attention(model):
        fl, ft = label_logits(model, ids, labels, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu)
    assert torch.equal(rt, ft)
    torch.testing.assert_close(fl, rl, rtol=0, atol=1e-4)


def test_runs_record_layout_and_fast_paths_and_rows_matches_padding_free(tiny_run_config, tmp_path):
    """Both layouts train the same documents to the same losses (fp32, dropout off); the record
    says which layout and fast paths ran."""
    common = dict(method="lora", method__dropout=0.0, train__steps=4, probe__heldout=0)
    pf = run_training(tiny_run_config(out=str(tmp_path / "pf"), **common), **QUIET)
    rows = run_training(tiny_run_config(out=str(tmp_path / "rows"), train__packing="rows", **common), **QUIET)
    assert pf["data"]["layout"] == "padding_free" and rows["data"]["layout"] == "rows"
    assert pf["train"]["tokens"] == rows["train"]["tokens"] and pf["train"]["loss_tokens"] == rows["train"]["loss_tokens"]
    assert pf["train"]["first_loss"] == pytest.approx(rows["train"]["first_loss"], abs=1e-5)
    assert pf["train"]["last_loss"] == pytest.approx(rows["train"]["last_loss"], abs=1e-4)
    assert pf["train"]["fast_paths"]["cast_cache_linears"] > 0
    assert "skip_dropout_modules" in pf["train"]["fast_paths"]  # auto on CPU (none here: dropout 0)
    off = run_training(tiny_run_config(out=str(tmp_path / "off"), method="lora", train__steps=2, probe__heldout=0,
                                       train__dropout_sampler="torch", train__cast_cache="off", train__fused_rope=False,
                                       train__fused_rmsnorm=False, train__fused_lora="off"), **QUIET)
    assert off["train"]["fast_paths"] == {}


def test_unsupported_model_falls_back_to_rows(tiny_run_config, tmp_path, monkeypatch):
    import arena.objectives.sft as sft

    monkeypatch.setattr(sft, "supports_packed_attention", lambda model: False)
    rec = run_training(tiny_run_config(out=str(tmp_path / "r"), method="lora", train__steps=2, probe__heldout=0), **QUIET)
    assert rec["data"]["layout"] == "rows" and rec["status"] == "done"


def test_bad_layout_and_sampler_values_are_refused(tiny_run_config):
    from arena.errors import ConfigError

    with pytest.raises(ConfigError, match="train.packing.*padding_free"):
        tiny_run_config(train__packing="wrapped")
    with pytest.raises(ConfigError, match="train.dropout_sampler"):
        tiny_run_config(train__dropout_sampler="fast")


def test_yaml_on_off_words_reach_word_valued_fields(tiny_run_config, tmp_path):
    """YAML 1.1 turns a bare `off` into False; fields whose allowed values are words get the word back."""
    from arena.config import load_run_config

    assert tiny_run_config("train.cast_cache=off").train.cast_cache == "off"
    assert tiny_run_config("train.cast_cache=on").train.cast_cache == "on"
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("model: {name: tiny}\ntrain: {cast_cache: off, device: cpu}\n")
    assert load_run_config(str(cfg_file), []).train.cast_cache == "off"

