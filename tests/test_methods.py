"""Every registered method, on the tiny model: identity at init, learns, merges, reloads, and either
gives the interpolation's generator path (W(0) = W0, W(1) = merged) or refuses it by its field.

Parametrized over `METHODS.names()`, so a newly registered method is covered by registering it.
All comparisons run in fp32 on CPU.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from doc_examples import import_doc_module

from arena.errors import ConfigError
from arena.components import METHODS
from arena.methods.base import Method

# Peak LRs at which the tiny random model visibly learns arith in 10 steps (measured over seeds
# 0-3: every method's loss drops by >= 0.13 nats, most by 0.2-0.45). A method missing here gets
# the LoRA-like 1e-2; if it needs another LR, add it.
LR = {
    "full": 1e-3,
    "lora": 1e-2,
    "rslora": 1e-2,
    "dora": 1e-2,
    "pissa": 1e-2,
    "adalora": 5e-2,
    "loha": 3e-2,
    "lokr": 3e-2,
    "oft": 3e-2,
    "boft": 5e-2,
    "vera": 5e-2,
    "ia3": 1.0,
}
# Logit tolerance of "wrapped at init == base model". Exact for methods whose update is zero or an
# exact identity at init; PiSSA splits W0 into residual + top-r SVD part (fp32 round-off ~2e-7).
INIT_ATOL = {"pissa": 1e-5}
MIN_LOSS_DROP = 0.05  # nats, mean of the first 2 vs the last 2 step losses

ALL_METHODS = METHODS.names()


def _inputs(tok) -> torch.Tensor:
    texts = ["What is 12 + 34? 12 + 34 = 46", "Question: which of the following is the answer? The answer is 42."]
    enc = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    n = min(len(e) for e in enc)
    return torch.tensor([e[:n] for e in enc])


@torch.no_grad()
def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    return model(input_ids=ids, use_cache=False).logits.float()


def test_every_method_is_registered_with_options():
    assert len(ALL_METHODS) >= 12
    for name in ALL_METHODS:
        cls = METHODS.get(name)
        assert cls.name == name
        assert cls.default_lr > 0
        cls.Options()  # defaults must validate


@pytest.mark.parametrize("name", ALL_METHODS)
def test_wrapped_at_init_equals_base(name, tiny_run_config, tiny_base):
    from arena.components import build_components
    from arena.runs import load_and_wrap

    base, tok = tiny_base
    ids = _inputs(tok)
    cfg = tiny_run_config(method=name)
    method, _, _ = build_components(cfg, check_data=False)
    wrapped, _, _ = load_and_wrap(cfg, method, torch.device("cpu"))
    assert wrapped is not base
    got, ref = _logits(wrapped, ids), _logits(base, ids)
    atol = INIT_ATOL.get(name, 0.0)
    diff = float((got - ref).abs().max())
    assert diff <= atol, f"{name}: wrapped model differs from the base at init by {diff:.3g} (allowed {atol})"


@pytest.fixture(scope="module", params=ALL_METHODS)
def trained(request, tmp_path_factory, tiny_run_config):
    """One 10-step run per method through the real experiment path, shared by the tests below."""
    name = request.param
    return _train(name, tmp_path_factory.mktemp(f"run-{name}") / "run", tiny_run_config)


def _train(name: str, out, tiny_run_config) -> dict:
    from arena.experiment import run_training

    cfg = tiny_run_config(method=name, train__lr=LR.get(name, 1e-2), out=str(out))
    record = run_training(cfg, log=lambda msg: None)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return {"name": name, "cfg": cfg, "record": record, "model": record["_model"], "log": log, "out": out}


def test_training_decreases_loss(trained):
    log = trained["log"]
    assert [r["step"] for r in log] == list(range(1, 11))
    losses = [r["loss"] for r in log]
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < first - MIN_LOSS_DROP, f"{trained['name']}: loss {first:.4f} -> {last:.4f} (lr {LR.get(trained['name'])})"
    assert trained["record"]["status"] == "done"
    assert trained["record"]["method"]["lr"] == LR.get(trained["name"], 1e-2)


def test_trainable_parameter_count(trained):
    from safetensors.torch import load_file

    m = trained["record"]["method"]
    trainable, total = m["trainable_params"], m["total_params"]
    if trained["name"] == "full":
        assert trainable == total
    else:
        assert 0 < trainable < total
    # The checkpoint stores exactly the trained tensors, nothing more and nothing less.
    saved = load_file(str(trained["out"] / "final" / "trainable.safetensors"))
    assert sum(t.numel() for t in saved.values()) == trainable


def test_merge_gives_plain_model_with_same_logits(trained, tiny_base):
    base, tok = tiny_base
    ids = _inputs(tok)
    method = METHODS.get(trained["name"])(trained["cfg"].method.options)
    wrapped = copy.deepcopy(trained["model"])
    want = _logits(wrapped, ids)
    # Training must have moved the model, or "merge == wrapped" would prove nothing.
    assert float((want - _logits(base, ids)).abs().max()) > 1e-3
    merged = method.merge(wrapped)
    assert type(merged) is type(base), f"merge returned {type(merged).__name__}"
    assert set(merged.state_dict()) == set(base.state_dict())
    diff = float((_logits(merged, ids) - want).abs().max())
    assert diff <= 1e-4, f"{trained['name']}: merged logits differ by {diff:.3g}"


def test_load_run_model_reproduces_trained_model(trained, tiny_base):
    from arena.runs import load_run_model

    _, tok = tiny_base
    ids = _inputs(tok)
    want = _logits(trained["model"], ids)
    unmerged, _, cfg = load_run_model(trained["out"], merged=False)
    assert cfg.method.name == trained["name"]
    assert torch.equal(_logits(unmerged, ids), want)
    merged, _, _ = load_run_model(trained["out"])
    diff = float((_logits(merged, ids) - want).abs().max())
    assert diff <= 1e-4, f"{trained['name']}: reloaded merged logits differ by {diff:.3g}"


def test_generator_path_contract(trained, tiny_base):
    base, _ = tiny_base
    name = trained["name"]
    cls = METHODS.get(name)
    method = cls(trained["cfg"].method.options)
    wrapped = copy.deepcopy(trained["model"])
    if cls.generators is Method.generators:
        assert cls.interpolation_path == "weights", f"{name}: default path 'generator' but no generators"
        with pytest.raises(ConfigError) as e:
            method.generators(wrapped)
        assert e.value.field == "interpolation.path" and repr(name) in str(e.value)
        return
    makers = method.generators(wrapped)
    params = dict(base.named_parameters())
    assert makers and set(makers) <= set(params), f"{name}: generators must be named like the plain model's weights"
    merged = dict(method.merge(wrapped).named_parameters())
    for n, make in makers.items():
        w0 = params[n].detach().float().clone()
        weight_at = make(w0)
        assert torch.equal(weight_at(0.0), w0), f"{name}: {n} at alpha=0 is not W0"
        torch.testing.assert_close(weight_at(1.0), merged[n].detach().float(), atol=1e-5, rtol=0)


def test_the_documented_method_passes_the_contract(tmp_path, monkeypatch, tiny_run_config, tiny_base):
    """The OLoRA example of docs/extending.md, imported from the page into a copy of METHODS: the
    identity at init holds to fp32 round-off only (the page's one INIT_ATOL entry), the rest at once."""
    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))
    import_doc_module("# arena/methods/olora.py", tmp_path, monkeypatch)
    assert "olora" in METHODS and METHODS.get("olora").Options().rank > 0
    with pytest.raises(AssertionError, match="differs from the base at init"):
        test_wrapped_at_init_equals_base("olora", tiny_run_config, tiny_base)
    monkeypatch.setitem(INIT_ATOL, "olora", 1e-5)
    test_wrapped_at_init_equals_base("olora", tiny_run_config, tiny_base)
    trained = _train("olora", tmp_path / "run", tiny_run_config)
    test_training_decreases_loss(trained)
    test_trainable_parameter_count(trained)
    test_merge_gives_plain_model_with_same_logits(trained, tiny_base)
    test_load_run_model_reproduces_trained_model(trained, tiny_base)
    test_generator_path_contract(trained, tiny_base)
