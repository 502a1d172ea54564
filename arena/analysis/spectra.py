"""Spectral profile of a weight update ΔW relative to the base weight W0.

Where an update puts its energy, measured against the base weight's own singular directions,
separates methods that look alike by norm: PiSSA initialises its adapter from W0's top-r singular
triplets and so updates the principal directions, LoRA starts from a random subspace, and full
fine-tuning spreads energy over many directions. See `spectral_profile` for each quantity.

Computed in float64 (see geometry.py); four SVDs (ΔW, W0 with vectors, W0 and W0 + ΔW values only),
each O(out·in·min(out, in)): milliseconds for SmolLM2's 576-wide modules; pass GPU tensors for
7B-sized ones (computation stays on the input's device).
"""

from __future__ import annotations

import torch

from arena.analysis.geometry import as_matrix
from arena.errors import ArenaError

N_TOP_SINGULAR_VALUES = 8
DEFAULT_K = 8  # = the rank of the reference LoRA/PiSSA adapters (r8), so PiSSA's subspace is exactly top-8


def default_k(out_features: int, in_features: int) -> int:
    """min(8, min_dim // 2), at least 1: the top-k and bottom-k subspaces never overlap."""
    return max(1, min(DEFAULT_K, min(out_features, in_features) // 2))


def _frac(part: torch.Tensor, total: float) -> float:
    # ΔW = 0 puts no energy anywhere; 0.0 (not NaN) keeps untouched modules JSON-friendly, and no eps
    # here because real updates can be small enough (‖ΔW‖_F² ~ 1e-10) for an eps to bias them.
    return float(part.square().sum()) / total if total > 0.0 else 0.0


def spectral_profile(delta_w, w0, k: int | None = None, eps: float = 1e-12) -> dict:
    """Spectral diagnostics of ΔW (out × in) against W0 = U S Vᵀ (thin SVD, σ descending, m = min(out, in)).

    Returned keys (floats unless noted):
      k                          int, subspace size used (default `default_k`: 8, or min_dim // 2 if smaller).
      frobenius_norm             ‖ΔW‖_F.
      nuclear_norm               ‖ΔW‖_* = Σ σ_i(ΔW).
      spectral_norm              ‖ΔW‖₂ = σ_1(ΔW).
      effective_rank             stable rank ‖ΔW‖_F² / ‖ΔW‖₂² (Rudelson & Vershynin 2007), in [1, rank ΔW];
                                 1 for a rank-1 update, n for the n × n identity; 0.0 when ΔW = 0.
      top_singular_values        list, the first 8 σ_i(ΔW) (fewer if min_dim < 8).
      principal_fraction         ‖U_kᵀ ΔW V_k‖_F² / ‖ΔW‖_F²: energy in W0's top-k left AND right
                                 singular subspaces (≈1 for PiSSA-like updates; U_k, V_k = first k columns).
      principal_left_fraction    ‖U_kᵀ ΔW‖_F² / ‖ΔW‖_F² (output side only).
      principal_right_fraction   ‖ΔW V_k‖_F² / ‖ΔW‖_F² (input side only).
      minor_fraction, minor_left_fraction, minor_right_fraction
                                 the same for the bottom-k directions (columns m−k … m−1 of the thin
                                 SVD; the null space of a rectangular W0 is not counted). MiLoRA-style
                                 updates concentrate here.
      chance_fraction            k² / (out·in): E principal_fraction (and E minor_fraction) of an
                                 isotropic random ΔW, the baseline to compare the two against.
                                 One-sided baselines are k/out and k/in.
      sv_retention               list, σ_i(W0 + ΔW) / (σ_i(W0) + eps) for i < k (1.0 = kept).
      top_sv_rel_change          ‖σ_{1:k}(W0 + ΔW) − σ_{1:k}(W0)‖₂ / (‖σ_{1:k}(W0)‖₂ + eps); c for ΔW = c·W0.
    All fractions are 0.0 when ΔW = 0. Raises ArenaError for non-2-D, mismatched or non-finite inputs
    and for k outside [1, min(out, in)].
    """
    dw = as_matrix(delta_w, "delta_w", min_rows=1)
    w = as_matrix(w0, "w0", min_rows=1, device=dw.device)
    if w.shape != dw.shape:
        raise ArenaError(
            f"w0 and delta_w must have the same shape (out_features, in_features); got w0 shape "
            f"{tuple(w.shape)} and delta_w shape {tuple(dw.shape)}"
        )
    out_f, in_f = dw.shape
    m = min(out_f, in_f)
    if k is None:
        k = default_k(out_f, in_f)
    if not 1 <= int(k) <= m:
        raise ArenaError(f"k must be between 1 and min(out_features, in_features) = {m}; got {k}")
    k = int(k)

    s_dw = torch.linalg.svdvals(dw)
    # ‖ΔW‖_F² from the entries rather than Σσ², which is exact for rank-deficient ΔW.
    fro2 = float(dw.square().sum())
    spec = float(s_dw[0])

    u, _, vh = torch.linalg.svd(w, full_matrices=False)
    u_top, v_top = u[:, :k], vh[:k].T
    u_bot, v_bot = u[:, m - k :], vh[m - k :].T

    # Both spectra from the same routine (svdvals, not svd's S, which differs in the last bits), so
    # an untouched module (ΔW = 0) reads exactly 0 change rather than 1e-16.
    s0k = torch.linalg.svdvals(w)[:k]
    s1 = torch.linalg.svdvals(w + dw)[:k]

    return {
        "k": k,
        "frobenius_norm": fro2**0.5,
        "nuclear_norm": float(s_dw.sum()),
        "spectral_norm": spec,
        "effective_rank": fro2 / spec**2 if spec > 0.0 else 0.0,
        "top_singular_values": [float(v) for v in s_dw[:N_TOP_SINGULAR_VALUES]],
        "principal_fraction": _frac(u_top.T @ dw @ v_top, fro2),
        "principal_left_fraction": _frac(u_top.T @ dw, fro2),
        "principal_right_fraction": _frac(dw @ v_top, fro2),
        "minor_fraction": _frac(u_bot.T @ dw @ v_bot, fro2),
        "minor_left_fraction": _frac(u_bot.T @ dw, fro2),
        "minor_right_fraction": _frac(dw @ v_bot, fro2),
        "chance_fraction": k * k / (out_f * in_f),
        "sv_retention": [float(v) for v in s1 / (s0k + eps)],
        "top_sv_rel_change": float(torch.linalg.vector_norm(s1 - s0k))
        / (float(torch.linalg.vector_norm(s0k)) + eps),
    }
