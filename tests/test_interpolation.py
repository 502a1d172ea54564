"""θ(α) between base and tuned: endpoints for every registered method, the generator path of every
method that has one (OFT/BOFT: Cayley generators) and its refusal by every other, the trade-off
rules on hand-made curves, and the settings' field errors."""

from __future__ import annotations

import sys

import pytest
import torch

from arena.analysis.interpolator import load_interpolator
from arena.analysis.settings import InterpolationSettings
from arena.analysis.tradeoff import tradeoff
from arena.errors import ConfigError
from arena.components import METHODS
from arena.methods.base import Method

# Peak LRs at which the tiny model moves visibly in a few steps (as in test_methods.py).
LR = {"full": 1e-3, "adalora": 5e-2, "loha": 3e-2, "lokr": 3e-2, "oft": 3e-2, "boft": 5e-2, "vera": 5e-2, "ia3": 1.0}
GENERATOR_METHODS = sorted(n for n in METHODS.names() if METHODS.get(n).generators is not Method.generators)


def test_generator_methods():
    # the methods that declare the generator path as their default are the ones that have one
    assert GENERATOR_METHODS == ["boft", "oft"]
    assert GENERATOR_METHODS == sorted(n for n in METHODS.names() if METHODS.get(n).interpolation_path == "generator")


def _ids(tok) -> torch.Tensor:
    return torch.tensor([tok("What is 12 + 34? 12 + 34 = 46. The answer is 42.", add_special_tokens=False)["input_ids"]])


@torch.no_grad()
def _logits(model, ids):
    model.eval()
    return model(input_ids=ids, use_cache=False).logits.float()


@pytest.fixture(scope="module", params=METHODS.names())
def run(request, tmp_path_factory):
    """A 4-step tiny arith run per method, with the base and the merged tuned model's logits."""
    from conftest import tiny_overrides

    from arena.config import load_run_config
    from arena.experiment import run_training
    from arena.runs import load_run_model
    from arena.models.loader import load_model

    name = request.param
    out = tmp_path_factory.mktemp(f"interp-{name}") / "run"
    cfg = load_run_config(None, tiny_overrides(method=name, train__lr=LR.get(name, 1e-2), train__steps=4,
                                               probe__heldout=0, out=str(out)))
    run_training(cfg, log=lambda m: None)
    base, tok, _ = load_model("tiny")
    ids = _ids(tok)
    merged, _, _ = load_run_model(out)
    return {"name": name, "out": out, "ids": ids, "base": _logits(base, ids), "tuned": _logits(merged, ids)}


def test_weights_path_endpoints(run):
    interp, _, _, _ = load_interpolator(run["out"], "weights")
    ids = run["ids"]
    assert float((run["tuned"] - run["base"]).abs().max()) > 1e-3, "training did not move the model"
    assert torch.equal(_logits(interp.apply(0.0), ids), run["base"]), f"{run['name']}: alpha=0 is not the base model"
    diff = float((_logits(interp.apply(1.0), ids) - run["tuned"]).abs().max())
    assert diff <= 1e-4, f"{run['name']}: alpha=1 differs from the merged tuned model by {diff:.3g}"
    # `at` applies an α temporarily and restores the previous one
    with interp.at(0.5) as m:
        half = _logits(m, ids)
    assert interp.alpha == 1.0 and not torch.equal(half, run["tuned"])
    assert torch.equal(_logits(interp.apply(0.0), ids), run["base"])  # back and forth stays exact


def test_generator_path(run):
    if run["name"] not in GENERATOR_METHODS:
        with pytest.raises(ConfigError, match="interpolation.path.*boft, oft.*this run's method is") as e:
            load_interpolator(run["out"], "generator")
        assert e.value.field == "interpolation.path" and repr(run["name"]) in str(e.value)
        return
    gen, _, _, _ = load_interpolator(run["out"], "generator")
    dense, _, _, _ = load_interpolator(run["out"], "weights")
    ids = run["ids"]
    assert gen.generators and not gen.delta  # every moved weight follows its Cayley generator
    assert torch.equal(_logits(gen.apply(0.0), ids), run["base"])
    assert float((_logits(gen.apply(1.0), ids) - run["tuned"]).abs().max()) <= 1e-4
    torch.testing.assert_close(_logits(gen.apply(1.0), ids), _logits(dense.apply(1.0), ids), atol=1e-4, rtol=0)
    half = float((_logits(gen.apply(0.5), ids) - _logits(dense.apply(0.5), ids)).abs().max())
    assert half > 1e-3, f"{run['name']}: generator and dense paths agree at alpha=0.5 ({half:.3g})"


def _pt(alpha, general, target):
    return {"alpha": alpha, "general": {"value": general, "se": 0.01}, "target": {"value": target, "se": 0.01}}


def test_tradeoff_rules_on_nll_curves():
    # lower NLL is better: target falls along α, general rises
    pts = [_pt(0.0, 1.00, 2.0), _pt(0.25, 1.005, 1.5), _pt(0.5, 1.02, 1.3), _pt(1.0, 1.20, 1.2)]
    best = tradeoff(pts, "nll")
    assert best["constrained"]["alpha"] == 0.25 and best["constrained"]["delta"] == 0.01
    assert tradeoff(pts, "nll", delta=0.05)["constrained"]["alpha"] == 0.5
    # normalised: x = (2.0 - t)/0.8, y = (1.2 - g)/0.2; chord from (0, 1) to (1, 0), distance (x + y - 1)/√2:
    # α=0.25 -> (0.625, 0.975), α=0.5 -> (0.875, 0.9): α=0.5 is farthest above it
    assert best["knee"]["alpha"] == 0.5
    assert best["knee"]["distance"] == pytest.approx((0.875 + 0.9 - 1) / 2**0.5)
    # a curve below its chord has no knee; α=0 always satisfies rule (a)
    below = [_pt(0.0, 1.0, 2.0), _pt(0.5, 1.15, 1.9), _pt(1.0, 1.2, 1.2)]
    b = tradeoff(below, "nll")
    assert b["knee"]["alpha"] is None and b["constrained"]["alpha"] == 0.0
    # accuracy-like scores (higher is better) use the base general SE as δ
    acc = [_pt(0.0, 0.50, 0.20), _pt(0.5, 0.495, 0.30), _pt(1.0, 0.40, 0.35)]
    a = tradeoff(acc, "accuracy")
    assert a["constrained"] == {**a["constrained"], "alpha": 0.5, "delta": 0.01}
    assert a["knee"]["alpha"] == 0.5


def test_settings_name_their_fields():
    assert InterpolationSettings(alphas=[0.5, 0.25]).alphas == [0.0, 0.25, 0.5, 1.0]
    with pytest.raises(ConfigError, match=r"interpolation\.alphas: .*finite"):
        InterpolationSettings(alphas=[0.5, float("nan")])
    with pytest.raises(ConfigError, match=r"interpolation\.suites: .*did you mean 'general'"):
        InterpolationSettings(suites=["genral"])
    with pytest.raises(ConfigError, match=r"interpolation\.limit"):
        InterpolationSettings(limit=0)


def test_unknown_path_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"interpolation\.path: invalid value 'spline'"):
        load_interpolator(tmp_path, "spline")


OFT_LIKE = '''
"""A throw-away OFT-like method: OFT's rotation under another name, with its own generator path."""
from arena.components import METHODS
from arena.methods.oft import OFT


@METHODS.register("oft_like")
class OFTLike(OFT):
    name = "oft_like"
'''


def test_an_oft_like_method_is_one_module(tmp_path, monkeypatch):
    """A new method with generators gets the generator path without any edit to arena/analysis."""
    from conftest import tiny_overrides

    from arena.config import load_run_config
    from arena.experiment import run_training

    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))
    (tmp_path / "throwaway_oft_like.py").write_text(OFT_LIKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "throwaway_oft_like", raising=False)
    import throwaway_oft_like  # noqa: F401

    out = tmp_path / "run"
    run_training(load_run_config(None, tiny_overrides(method="oft_like", train__lr=3e-2, train__steps=2,
                                                      probe__heldout=0, out=str(out))), log=lambda m: None)
    gen, _, cfg, _ = load_interpolator(out, "generator")
    assert cfg.method.name == "oft_like" and gen.generators and not gen.delta
