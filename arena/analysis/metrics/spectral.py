"""Spectral profile of ΔW against W0's singular directions (norms, stable rank, principal/minor fractions).

Formulas in arena/analysis/spectra.py (`spectral_profile`); imported when it runs (torch).
"""

from __future__ import annotations

from arena.analysis.metrics.registry import (
    MetricSpec,
    ModuleInputs,
    ModuleMetric,
    register,
)


def _spectral(x: ModuleInputs) -> dict:
    from arena.analysis.spectra import spectral_profile

    return spectral_profile(x.delta_w, x.w0)


def _spec(key: str, field: str, label: str, description: str, higher_is_better: bool | None, **kw) -> MetricSpec:
    return MetricSpec(key=key, path=("spectral", field), label=label, description=description,
                      higher_is_better=higher_is_better, **kw)


_k = "W0's top-k singular"
register(ModuleMetric(
    name="spectral", order=50, section="spectral", scope="module", compute=_spectral,
    specs=(
        _spec("dw_frobenius", "frobenius_norm", "|dW|_F", "‖ΔW‖_F", False, unit="weight norm", table_rank=0,
              table_width=9),
        _spec("dw_effective_rank", "effective_rank", "eff. rank", "stable rank ‖ΔW‖_F² / ‖ΔW‖₂²", None),
        _spec("dw_principal_fraction", "principal_fraction", "princ",
              f"share of ‖ΔW‖_F² in {_k} left and right subspaces", None, table_rank=8, table_width=7),
        _spec("dw_principal_left_fraction", "principal_left_fraction", "princ L",
              f"share of ‖ΔW‖_F² in {_k} left (output) subspace", None),
        _spec("dw_principal_right_fraction", "principal_right_fraction", "princ R",
              f"share of ‖ΔW‖_F² in {_k} right (input) subspace", None),
        _spec("dw_top_sv_rel_change", "top_sv_rel_change", "top-k σ change",
              "‖σ_1:k(W0 + ΔW) − σ_1:k(W0)‖ / ‖σ_1:k(W0)‖", False),
        _spec("dw_nuclear_norm", "nuclear_norm", "|dW|_*", "‖ΔW‖_* = Σ σ_i(ΔW)", False, unit="weight norm",
              summary=None),
        _spec("dw_spectral_norm", "spectral_norm", "|dW|_2", "‖ΔW‖₂ = σ_1(ΔW)", False, unit="weight norm",
              summary=None),
        _spec("dw_minor_fraction", "minor_fraction", "minor",
              "share of ‖ΔW‖_F² in W0's bottom-k left and right singular subspaces", None, summary=None),
        _spec("dw_minor_left_fraction", "minor_left_fraction", "minor L",
              "share of ‖ΔW‖_F² in W0's bottom-k left singular subspace", None, summary=None),
        _spec("dw_minor_right_fraction", "minor_right_fraction", "minor R",
              "share of ‖ΔW‖_F² in W0's bottom-k right singular subspace", None, summary=None),
        _spec("dw_chance_fraction", "chance_fraction", "chance",
              "k² / (out·in): the principal (and minor) fraction of an isotropic random ΔW", None, summary=None),
        _spec("dw_k", "k", "k", "subspace size of the principal and minor fractions", None, summary=None),
    ),
))
