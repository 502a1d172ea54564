"""Activation capture (shapes, padding removal, caps, cache, module selection) and the diagnostics
built on it, on the tiny model. Expected values come from closed forms: a model compared with
itself has ΔW = 0, identical outputs, CKA 1, Procrustes 0, CSD 0."""

from __future__ import annotations

import copy

import pytest
import torch

from arena.analysis.capture import Caps, Capture, capture_activations, capture_token_ids
from arena.analysis.capture_cache import cached_capture
from arena.analysis.diagnostics import compute_diagnostics
from arena.analysis.module_metrics import module_metrics
from arena.analysis.module_select import default_modules, resolve_modules
from arena.errors import ArenaError
from arena.training.packing import chat_texts

PROMPTS = ["What is 2 + 3?", "Question: A patient presents with fever and cough. Which diagnosis is most likely?",
           "hi", "Write your answer in at most three sentences. The quick brown fox jumps over the lazy dog."]
KEY = {"name": "tiny", "source": "random-init:seed0"}


@pytest.fixture(scope="module")
def tiny():
    from arena.models.loader import load_model

    model, tok, _ = load_model("tiny")
    return model.eval(), tok


def test_shapes_and_padding_removed(tiny):
    model, tok = tiny
    mods = default_modules(model)
    assert mods == [f"model.layers.1.{m}" for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj")]
    ids = capture_token_ids(tok, PROMPTS, Caps(prompt_format="chat"))
    assert ids.skip == [0] * len(PROMPTS)
    cap = capture_activations(model, ids, mods, pad_id=tok.pad_token_id, precision="fp32")
    # the tokens kept are exactly the attention-mask ones of a padded batch of the same prompts
    enc = tok([chat_texts(tok, p)[0] for p in PROMPTS], padding=True, add_special_tokens=False, return_tensors="pt")
    assert enc["attention_mask"].shape[1] * len(PROMPTS) > int(enc["attention_mask"].sum())  # padding existed
    assert cap.n_tokens == int(enc["attention_mask"].sum()) and cap.lengths == enc["attention_mask"].sum(1).tolist()
    for m in mods:
        lin = model.get_submodule(m)
        assert cap.inputs[m].shape == (cap.n_tokens, lin.in_features) and cap.inputs[m].dtype == torch.float32
        assert cap.outputs[m].shape == (cap.n_tokens, lin.out_features)
        # rows line up: each stored output is the module applied to the stored input
        torch.testing.assert_close(cap.outputs[m], cap.inputs[m] @ lin.weight.T, atol=1e-5, rtol=1e-5)
    assert cap.input_alias == {mods[1]: mods[0], mods[2]: mods[0]}  # q/k/v read one tensor, stored once
    # padding never leaks into real tokens: one prompt at a time gives the same rows (to matmul
    # round-off, which depends on the batch shape)
    at = 0
    for s in ids.ids:
        one = capture_activations(model, [s], mods, precision="fp32")
        for m in mods:
            torch.testing.assert_close(one.outputs[m], cap.outputs[m][at : at + len(s)], atol=1e-5, rtol=1e-5)
        at += len(s)


def test_caps_limit_prompts_tokens_and_length(tiny):
    _, tok = tiny
    full = capture_token_ids(tok, PROMPTS, Caps()).kept
    assert capture_token_ids(tok, PROMPTS, Caps(max_prompts=2)).kept == full[:2]
    assert max(capture_token_ids(tok, PROMPTS, Caps(max_length=10)).kept) == 10
    cut = capture_token_ids(tok, PROMPTS, Caps(max_tokens=full[0] + 3))
    assert cut.kept == [full[0], 3]  # the last prompt is cut to fit the token cap
    with pytest.raises(ArenaError, match="diagnostics.max_tokens"):  # the settings field, not a flag
        Caps(max_tokens=0)


def test_shared_prefix_once_stores_the_common_prefix_once(tiny):
    model, tok = tiny
    mods = default_modules(model)[:1]
    prompts = ["What is 2 + 3?", "What is 14 - 7?", "What is 9 + 9?"]
    keep = capture_token_ids(tok, prompts, Caps(prompt_format="chat"))
    once = capture_token_ids(tok, prompts, Caps(shared_prefix="once", prompt_format="chat"))
    p = keep.common_prefix
    assert p >= 5 and once.common_prefix == p  # "<|im_start|>user\nWhat is " is shared
    assert once.ids == keep.ids and once.skip == [0, p, p] and once.kept == [n - k for n, k in zip(keep.kept, [0, p, p])]
    a = capture_activations(model, keep, mods, precision="fp32")
    b = capture_activations(model, once, mods, precision="fp32")
    n0, n1 = keep.kept[0], keep.kept[1]
    # the rows kept are the same rows, minus the repeats of the prefix (which are identical to prompt 0's)
    torch.testing.assert_close(b.outputs[mods[0]][n0 : n0 + n1 - p], a.outputs[mods[0]][n0 + p : n0 + n1])
    torch.testing.assert_close(a.outputs[mods[0]][n0 : n0 + p], a.outputs[mods[0]][:p])


def test_raw_prompts_are_the_default_and_carry_no_template_header(tiny):
    """PEFT-Arena tokenizes raw prompts; in the chat template every prompt starts with the same
    header, whose identical rows confounded CSD and the geometry."""
    _, tok = tiny
    raw = capture_token_ids(tok, PROMPTS, Caps())
    assert raw.ids == [tok(p)["input_ids"] for p in PROMPTS]
    chat = capture_token_ids(tok, PROMPTS, Caps(prompt_format="chat"))
    assert chat.common_prefix > raw.common_prefix and sum(chat.kept) > sum(raw.kept)
    with pytest.raises(ArenaError, match="diagnostics.prompt_format"):
        Caps(prompt_format="template")


def test_cache_hit_returns_identical_tensors(tiny, tmp_path):
    model, tok = tiny
    mods = default_modules(model)
    a = cached_capture(model, tok, PROMPTS, mods, KEY, caps=Caps(max_tokens=80), precision="fp32", cache_dir=tmp_path)
    assert not a.cached and len(list(tmp_path.glob("*.safetensors"))) == 1
    b = cached_capture(model, tok, PROMPTS, mods, KEY, caps=Caps(max_tokens=80), precision="fp32", cache_dir=tmp_path)
    assert b.cached and b.lengths == a.lengths and b.input_alias == a.input_alias
    for m in mods:
        assert torch.equal(a.inputs[m], b.inputs[m]) and torch.equal(a.outputs[m], b.outputs[m])
    # anything in the key (here the module list, then the model identity) misses the cache
    c = cached_capture(model, tok, PROMPTS, mods[:2], KEY, caps=Caps(max_tokens=80), precision="fp32", cache_dir=tmp_path)
    d = cached_capture(model, tok, PROMPTS, mods, {**KEY, "source": "other"}, caps=Caps(max_tokens=80),
                       precision="fp32", cache_dir=tmp_path)
    assert not c.cached and not d.cached and len(list(tmp_path.glob("*.safetensors"))) == 3


def test_module_selection_and_unknown_module_lists_names(tiny):
    model, _ = tiny
    assert resolve_modules(model, "layers.0.mlp.down_proj") == ["model.layers.0.mlp.down_proj"]
    assert resolve_modules(model, ["*.layers.0.self_attn.[qk]_proj"]) == [
        "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj"]
    assert resolve_modules(model, "re:layers\\.1\\.mlp, model.layers.0.self_attn.o_proj") == [
        "model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj",
        "model.layers.0.self_attn.o_proj"]
    with pytest.raises(ArenaError) as e:
        resolve_modules(model, "model.layers.7.self_attn.q_proj")
    msg = str(e.value)
    assert "'model.layers.7.self_attn.q_proj'" in msg and "available" in msg
    assert "model.layers.0.self_attn.q_proj" in msg and "model.layers.1.mlp.down_proj" in msg
    with pytest.raises(ArenaError, match="available: .*model.layers.0.mlp.up_proj"):
        capture_activations(model, [[1, 2, 3]], ["model.layers.0.mlp"], precision="fp32")


def test_default_modules_at_one_and_two_thirds_depth():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=30,
                      num_attention_heads=2, num_key_value_heads=1)
    mods = default_modules(LlamaForCausalLM(cfg))
    assert len(mods) == 8
    assert {m.split(".")[2] for m in mods} == {"10", "20"}
    assert {m.rsplit(".", 1)[-1] for m in mods} == {"q_proj", "k_proj", "v_proj", "down_proj"}


def test_model_against_itself_gives_cka_1_procrustes_0_csd_0(tiny, tmp_path):
    model, tok = tiny
    sets = {"general": PROMPTS[:2], "target": PROMPTS[2:]}
    mods = default_modules(model)
    diag = compute_diagnostics(model, copy.deepcopy(model), tok, sets, mods, KEY, caps=Caps(max_tokens=120),
                               precision="bf16-autocast", cache_dir=tmp_path, log=lambda m: None)
    assert list(diag["modules"]) == mods
    for m in diag["modules"].values():
        for d in ("general", "target"):
            g = m["geometry"][d]
            assert g["cka"] == pytest.approx(1.0, abs=1e-9)
            assert g["procrustes"] < 1e-6 and g["procrustes_raw"] == 0.0 and g["gram"] == 0.0
            assert m["csd"][d] == {"abs": 0.0, "rel": 0.0, "un": 0.0}
        assert m["spectral"]["frobenius_norm"] == 0.0
    s = diag["summary"]
    assert s["cka_general"] == pytest.approx(1.0) and s["csd_rel_target"] == 0.0 and s["dw_frobenius"] == 0.0
    assert {"capture_base_s", "capture_tuned_s", "csd_s", "procrustes_s", "gram_s", "cka_s", "spectral_s"} <= set(diag["timings"])


def test_one_perturbed_module_moves_only_what_it_feeds(tiny, tmp_path):
    model, tok = tiny
    tuned = copy.deepcopy(model)
    q = "model.layers.1.self_attn.q_proj"
    with torch.no_grad():
        tuned.get_submodule(q).weight.mul_(1.5)
    mods = default_modules(model)
    diag = compute_diagnostics(model, tuned, tok, {"general": PROMPTS[:2], "target": PROMPTS[2:]}, mods, KEY,
                               caps=Caps(max_tokens=120), precision="fp32", cache_dir=tmp_path, log=lambda m: None)
    mq, mk = diag["modules"][q], diag["modules"]["model.layers.1.self_attn.k_proj"]
    assert mq["csd"]["general"]["rel"] == pytest.approx(0.25, rel=1e-6)  # ΔW = 0.5 W0: ‖ΔW h‖²/‖W0 h‖² = 1/4
    assert mq["geometry"]["general"]["cka"] == pytest.approx(1.0, abs=1e-9)  # isotropic scaling: CKA invariant
    assert mq["geometry"]["general"]["procrustes"] == pytest.approx(0.5, rel=1e-4)  # |c - 1|
    assert mk["csd"]["general"]["abs"] == 0.0 and mk["geometry"]["general"]["cka"] == pytest.approx(1.0, abs=1e-12)
    # the MLP after the attention sees the change
    assert diag["modules"]["model.layers.1.mlp.down_proj"]["geometry"]["general"]["procrustes_raw"] > 0


def test_validation_token_mismatch_and_nan(tiny, tmp_path):
    model, tok = tiny
    m = "model.layers.1.self_attn.v_proj"
    w = model.get_submodule(m).weight.detach()
    a = Capture([m], [3], inputs={m: torch.randn(3, 64)}, outputs={m: torch.randn(3, 32)})
    b = Capture([m], [4], outputs={m: torch.randn(4, 32)})
    with pytest.raises(ArenaError, match="token counts differ"):
        module_metrics(m, w, w, {"general": a}, {"general": b})
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.get_submodule("model.layers.0.mlp.down_proj").weight[0, 0] = float("nan")
    with pytest.raises(ArenaError, match="non-finite"):
        compute_diagnostics(model, broken, tok, {"general": PROMPTS[:2]}, [m], KEY, caps=Caps(max_tokens=60),
                            precision="fp32", cache_dir=tmp_path, log=lambda m: None)
