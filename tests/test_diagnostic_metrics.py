"""The diagnostic-metric registry (arena.analysis.metrics): torch-free metadata, and contract tests
parametrized over every registered scalar, so a newly registered metric is covered by registering it.

Contracts: a finite value on random weights and activations; the declared direction holds on a
constructed pair (an unchanged module is never worse than a changed one); every scalar with a
summary rule is in `summarize_modules`; a metric in a throw-away module reaches the module dict,
the summary and the `arena analyze` table without editing anything else.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch
from doc_examples import import_doc_module

from arena.analysis import metrics as M
from arena.analysis.capture import Capture
from arena.analysis.metrics import registry
from arena.analysis.module_metrics import module_metrics, summarize_modules
from arena.analysis.tables import format_summary, format_table

MOD = "model.layers.0.mlp.down_proj"
SPECS = M.metric_specs()


def _pair(changed: bool, seed: int = 0, n: int = 64, d_in: int = 16, d_out: int = 12):
    """(W0, W1, base captures, tuned captures) of one Linear module y = W x on random inputs;
    unchanged: W1 = W0; changed: W1 = W0 + a random update."""
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(d_out, d_in, generator=g)
    w1 = w0 + 0.3 * torch.randn(d_out, d_in, generator=g) if changed else w0.clone()
    base, tuned = {}, {}
    for d in M.DISTS:
        h = torch.randn(n, d_in, generator=g) * (1.0 if d == "general" else 2.0)
        base[d] = Capture([MOD], [n], inputs={MOD: h}, outputs={MOD: h @ w0.T})
        tuned[d] = Capture([MOD], [n], outputs={MOD: h @ w1.T})
    return w0, w1, base, tuned


@pytest.fixture(scope="module")
def computed():
    return {c: module_metrics(MOD, *_pair(c)) for c in (False, True)}


def test_metadata_imports_without_torch():
    code = textwrap.dedent("""
        import sys
        from arena.analysis.metrics import get_spec, metric_specs, summary_specs, table_specs
        assert summary_specs() and table_specs() and get_spec("cka_general").higher_is_better is True
        assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))[:3]
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_summary_and_table_layout():
    # The record's summary keys (and their order) and the `arena analyze` columns, as before the registry.
    assert [s.key for s in M.summary_specs()] == [
        *[f"csd_{k}_{d}" for d in M.DISTS for k in ("abs", "rel", "un")],
        *[f"csd_ratio_{k}" for k in ("abs", "rel", "un")],
        *[f"{m}_{d}" for d in M.DISTS for m in ("procrustes", "procrustes_raw", "gram", "cka")],
        "dw_frobenius", "dw_effective_rank", "dw_principal_fraction", "dw_principal_left_fraction",
        "dw_principal_right_fraction", "dw_top_sv_rel_change"]
    assert [s.label for s in M.table_specs()] == ["|dW|_F", "CSDrel G", "CSDrel T", "CSDun G", "G/T rel", "Proc G",
                                                  "Proc T", "raw G", "Gram G", "CKA G", "CKA T", "princ"]
    assert len({s.key for s in SPECS}) == len(SPECS)
    with pytest.raises(KeyError, match="no diagnostic metric 'cka'"):
        M.get_spec("cka")


@pytest.mark.parametrize("spec", SPECS, ids=[s.key for s in SPECS])
def test_finite_on_random_weights_and_activations(spec, computed):
    v = spec.value(computed[True])
    assert isinstance(v, (int, float)) and math.isfinite(v), f"{spec.key} at {spec.path}: {v!r}"
    assert spec.label and spec.description and spec.higher_is_better in (True, False, None)
    assert spec.distribution in (None, *M.DISTS)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.higher_is_better is not None],
                         ids=[s.key for s in SPECS if s.higher_is_better is not None])
def test_declared_direction_holds(spec, computed):
    same, moved = spec.value(computed[False]), spec.value(computed[True])
    assert same != pytest.approx(moved), f"{spec.key} does not tell an unchanged module from a changed one"
    if spec.higher_is_better:
        assert same > moved, f"{spec.key}: higher is better, but the unchanged module scores {same} < {moved}"
    else:
        assert same < moved, f"{spec.key}: lower is better, but the unchanged module scores {same} > {moved}"


@pytest.mark.parametrize("spec", M.summary_specs(), ids=[s.key for s in M.summary_specs()])
def test_summary_has_every_summarised_scalar(spec, computed):
    summary = summarize_modules({"a": computed[True], "b": computed[False]})
    want = (spec.value(computed[True]) + spec.value(computed[False])) / 2
    assert summary[spec.key] == pytest.approx(want)


def test_summary_skips_nan_and_missing():
    spec = M.get_spec("cka_general")
    mods = {"a": {"geometry": {"general": {"cka": 0.5}}}, "b": {"geometry": {"general": {"cka": float("nan")}}},
            "c": {}}
    s = summarize_modules(mods)
    assert s[spec.key] == 0.5 and s["csd_abs_general"] is None


def test_registering_twice_is_refused():
    cka = M.METRICS["cka"]
    with pytest.raises(ValueError, match="registered twice"):
        M.register(cka)
    with pytest.raises(ValueError, match="already registered"):
        M.register(registry.ModuleMetric(name="cka2", section="geometry", scope="distribution",
                                         compute=cka.compute, specs=cka.specs))


def test_the_documented_metric_is_one_module(tmp_path, monkeypatch, computed):
    """docs/extending.md's walk-through: the output-RMS module, loaded from the page into a copy of
    the registry, reaches the module dict, the summary and the table; nothing else is edited."""
    monkeypatch.setattr(registry, "METRICS", dict(registry.METRICS))
    module = import_doc_module("# arena/analysis/metrics/output_rms.py", tmp_path, monkeypatch)
    assert "output_rms" in registry.METRICS
    # the metadata imports without torch, as the built-in metric modules do
    code = f"import runpy, sys; runpy.run_path({module.__file__!r}); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

    keys = [s.key for s in M.metric_specs()]
    assert keys.index("output_rms_general") == keys.index("cka_general") + 1  # its section, its distribution
    same, moved = (module_metrics(MOD, *_pair(c)) for c in (False, True))
    assert same["geometry"]["general"]["rms"] == 0.0 and moved["geometry"]["target"]["rms"] > 0
    w0, w1, base, tuned = _pair(True)  # the documented formula: sqrt(mean((X1 - X0)^2))
    x0, x1 = base["general"].outputs[MOD], tuned["general"].outputs[MOD]
    assert moved["geometry"]["general"]["rms"] == pytest.approx(float(((x1 - x0).double() ** 2).mean().sqrt()))
    summary = summarize_modules({MOD: moved})
    assert summary["output_rms_target"] == moved["geometry"]["target"]["rms"]
    diag = {"modules": {MOD: moved}, "summary": summary, "timings": {"output_rms_s": 0.0}, "distributions": {}}
    head = format_table(diag).splitlines()[0]
    assert head.index("CKA T") < head.index("RMS G") < head.index("princ")
    assert "output_rms_general" in format_summary(diag)
    # the registry is restored after the test: the built-in layout is untouched
    monkeypatch.undo()
    assert "output_rms" not in registry.METRICS and computed[True]["geometry"]["general"].keys() == {
        "procrustes", "procrustes_raw", "gram", "cka"}
