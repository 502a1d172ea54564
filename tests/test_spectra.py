"""Spectral profile against closed-form cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arena.analysis.spectra import default_k, spectral_profile
from arena.errors import ArenaError


def _w0(out: int = 12, inp: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(out, inp))


def test_rank_one_update_has_effective_rank_one():
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=12), rng.normal(size=10)
    p = spectral_profile(np.outer(u, v), _w0())
    assert p["effective_rank"] == pytest.approx(1.0, abs=1e-12)
    # Only σ1 = ‖u‖‖v‖ is non-zero, so nuclear = spectral = Frobenius.
    expected = np.linalg.norm(u) * np.linalg.norm(v)
    for key in ("spectral_norm", "nuclear_norm", "frobenius_norm"):
        assert p[key] == pytest.approx(expected, rel=1e-12)
    assert p["top_singular_values"][0] == pytest.approx(expected, rel=1e-12)
    assert max(p["top_singular_values"][1:]) < 1e-9


@pytest.mark.parametrize("n", [1, 5, 16])
def test_identity_has_effective_rank_n(n):
    p = spectral_profile(np.eye(n), np.eye(n) * 2.0)
    # ‖I‖_F² = n, ‖I‖₂ = 1; nuclear = n.
    assert p["effective_rank"] == pytest.approx(n, abs=1e-12)
    assert p["nuclear_norm"] == pytest.approx(n, abs=1e-12)
    assert len(p["top_singular_values"]) == min(n, 8)


def test_update_in_top_singular_directions_is_principal():
    w0 = _w0()
    u, s, vh = np.linalg.svd(w0, full_matrices=False)
    k = 3
    # A PiSSA-like update: rescales W0's top-3 singular triplets and mixes them.
    dw = u[:, :k] @ np.array([[0.5, 0.2, 0.0], [0.0, -0.3, 0.1], [0.4, 0.0, 0.2]]) @ vh[:k]
    p = spectral_profile(dw, w0, k=k)
    assert p["principal_fraction"] == pytest.approx(1.0, abs=1e-10)
    assert p["principal_left_fraction"] == pytest.approx(1.0, abs=1e-10)
    assert p["principal_right_fraction"] == pytest.approx(1.0, abs=1e-10)
    assert p["minor_fraction"] == pytest.approx(0.0, abs=1e-10)
    assert p["chance_fraction"] == pytest.approx(9 / 120)


def test_update_in_bottom_singular_directions_is_minor():
    w0 = _w0()
    u, s, vh = np.linalg.svd(w0, full_matrices=False)
    dw = 0.1 * np.outer(u[:, -1], vh[-1]) + 0.2 * np.outer(u[:, -2], vh[-2])
    p = spectral_profile(dw, w0, k=2)
    assert p["minor_fraction"] == pytest.approx(1.0, abs=1e-10)
    assert p["principal_fraction"] == pytest.approx(0.0, abs=1e-10)


def test_diagonal_hand_case():
    # W0 = diag(4,3,2,1): U = V = I (up to sign). With k = 1 the top direction is e1, the bottom e4.
    # ΔW has entries (1,1) = 1, (1,2) = 1, (4,4) = 1 → ‖ΔW‖_F² = 3.
    #   principal: (U₁ᵀΔW V₁) = ΔW[0,0] → 1/3; left (row 1) = (1 + 1)/3; right (column 1) = 1/3.
    #   minor: ΔW[3,3] → 1/3; left (row 4) = 1/3; right (column 4) = 1/3.
    dw = np.zeros((4, 4))
    dw[0, 0] = dw[0, 1] = dw[3, 3] = 1.0
    p = spectral_profile(dw, np.diag([4.0, 3.0, 2.0, 1.0]), k=1)
    expected = {
        "principal_fraction": 1 / 3, "principal_left_fraction": 2 / 3, "principal_right_fraction": 1 / 3,
        "minor_fraction": 1 / 3, "minor_left_fraction": 1 / 3, "minor_right_fraction": 1 / 3,
    }
    for key, value in expected.items():
        assert p[key] == pytest.approx(value, abs=1e-12), key
    # Singular values of ΔW: rows (1,1,0,0) and (0,0,0,1) are orthogonal → σ = √2, 1.
    # Stable rank = 3 / 2, nuclear = √2 + 1.
    assert p["effective_rank"] == pytest.approx(1.5, abs=1e-12)
    assert p["nuclear_norm"] == pytest.approx(np.sqrt(2) + 1, abs=1e-12)


def test_retention_of_scaled_base():
    # W0 + cW0 = (1 + c)W0: every σ scales by 1 + c, so relative change = |c|.
    w0 = _w0()
    p = spectral_profile(-0.25 * w0, w0, k=4)
    assert p["sv_retention"] == pytest.approx([0.75] * 4, abs=1e-12)
    assert p["top_sv_rel_change"] == pytest.approx(0.25, abs=1e-12)
    # ΔW = cW0 = U(cS)Vᵀ: U_kᵀ ΔW V_k = c·S_k, so principal = Σ_{i≤k} σ_i² / Σ σ_i².
    s = np.linalg.svd(w0, compute_uv=False)
    assert p["principal_fraction"] == pytest.approx(np.sum(s[:4] ** 2) / np.sum(s**2), abs=1e-12)


def test_zero_update():
    p = spectral_profile(np.zeros((6, 5)), _w0(6, 5))
    assert p["effective_rank"] == 0.0 and p["frobenius_norm"] == 0.0
    assert p["principal_fraction"] == 0.0 and p["minor_fraction"] == 0.0
    assert p["sv_retention"] == pytest.approx([1.0] * p["k"], abs=1e-12)
    assert p["top_sv_rel_change"] == 0.0


def test_default_k_and_torch_inputs():
    assert default_k(576, 576) == 8 and default_k(10, 6) == 3 and default_k(1, 5) == 1
    w0 = torch.randn(20, 16, generator=torch.Generator().manual_seed(0))
    p = spectral_profile(torch.zeros_like(w0).bfloat16(), w0)
    assert p["k"] == 8 and isinstance(p["chance_fraction"], float)


def test_validation():
    with pytest.raises(ArenaError, match=r"w0 shape \(4, 4\) and delta_w shape \(5, 4\)"):
        spectral_profile(np.ones((5, 4)), np.ones((4, 4)))
    with pytest.raises(ArenaError, match="k must be between 1 and"):
        spectral_profile(np.ones((5, 4)), np.ones((5, 4)), k=5)
    with pytest.raises(ArenaError, match="delta_w must be 2-D"):
        spectral_profile(np.ones(4), np.ones((5, 4)))
    bad = np.ones((5, 4))
    bad[0, 0] = np.inf
    with pytest.raises(ArenaError, match=r"w0 contains 1 non-finite values \(0 NaN, 1 inf\)"):
        spectral_profile(np.ones((5, 4)), bad)
