"""Geometry metrics against closed-form cases (expected values derived by hand, not by the code)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from arena.analysis.geometry import (
    ProcrustesResult,
    gram_distortion,
    linear_cka,
    linear_cka_gram,
    minibatch_cka,
    procrustes,
    procrustes_residual,
)
from arena.errors import ArenaError

CKA_FUNCS = [linear_cka, linear_cka_gram]


def _data(n: int = 64, d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Non-isotropic columns and a non-zero mean, so centring and rotation actually matter.
    return rng.normal(size=(n, d)) * np.linspace(0.5, 3.0, d) + rng.normal(size=d)


def _rotation(d: int, seed: int = 1) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))  # Haar-distributed orthogonal matrix


# --- identical inputs -------------------------------------------------------------------------------


def test_identical_inputs():
    x = _data()
    for f in CKA_FUNCS:
        assert f(x, x) == pytest.approx(1.0, abs=1e-12)
    assert minibatch_cka(x, x, batch_size=32) == pytest.approx(1.0, abs=1e-12)
    assert procrustes_residual(x, x) == pytest.approx(0.0, abs=1e-12)
    assert procrustes_residual(x, x, raw=True) == 0.0
    assert gram_distortion(x, x) == 0.0


# --- orthogonal rotation X1 = X0 Q ------------------------------------------------------------------


def test_rotation():
    x = _data()
    q = _rotation(x.shape[1])
    y = x @ q
    for f in CKA_FUNCS:
        assert f(x, y) == pytest.approx(1.0, abs=1e-12)
    # X1ᵀX0 = Qᵀ(X0ᵀX0) = (QᵀV)Λ Vᵀ, so R = UVᵀ = Qᵀ and X1 R = X0 exactly.
    assert procrustes_residual(x, y) == pytest.approx(0.0, abs=1e-12)
    # Raw residual sees the rotation: ‖X0(Q − I)‖ is of the order of ‖X0‖.
    assert procrustes_residual(x, y, raw=True) > 0.5
    # Row-normalised Gram is invariant to a feature rotation: (Z Q)(Z Q)ᵀ = Z Zᵀ.
    assert gram_distortion(x, y) == pytest.approx(0.0, abs=1e-12)


def test_gram_distortion_non_orthogonal_transform():
    x = _data()
    a = np.diag(np.linspace(1.0, 4.0, x.shape[1]))  # anisotropic scaling: changes cosines
    assert gram_distortion(x, x @ a) > 0.05


def test_gram_distortion_hand_example():
    # Z0 = I₂ (rows e1, e2) → G0 = I, ‖G0‖ = √2.  X1 rows (1,0), (1,1) → Z1 rows (1,0), (1,1)/√2,
    # G1 = [[1, 1/√2], [1/√2, 1]], G1 − G0 has two off-diagonal 1/√2 entries, norm 1 → d = 1/√2.
    assert gram_distortion([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 1.0]]) == pytest.approx(
        1 / math.sqrt(2), abs=1e-12
    )


# --- isotropic scaling X1 = c X0 --------------------------------------------------------------------


@pytest.mark.parametrize("c", [0.5, 2.0, 3.0])
def test_isotropic_scaling(c):
    x = _data()
    for f in CKA_FUNCS:
        assert f(x, c * x) == pytest.approx(1.0, abs=1e-12)
    # X1ᵀX0 = c·X0ᵀX0 is symmetric PSD → U = V → R = I; residual ‖cX0 − X0‖/‖X0‖ = |c − 1|.
    assert procrustes_residual(x, c * x) == pytest.approx(abs(c - 1), abs=1e-12)
    # Centred but not rotated, X̄1 − X̄0 = (c − 1)X̄0 as well.
    assert procrustes_residual(x, c * x, raw=True) == pytest.approx(abs(c - 1), abs=1e-12)
    # Per-row scaling cancels in the row normalisation.
    assert gram_distortion(x, c * x) == pytest.approx(0.0, abs=1e-12)


# --- translation X1 = X0 + 1bᵀ ----------------------------------------------------------------------


def test_translation():
    x = _data()
    b = np.linspace(-2.0, 2.0, x.shape[1]) + 0.3
    y = x + b
    for f in CKA_FUNCS:
        assert f(x, y) == pytest.approx(1.0, abs=1e-12)
    assert procrustes_residual(x, y) == pytest.approx(0.0, abs=1e-12)
    # Raw is centred too: a mean shift is no change (uncentred it was ‖1bᵀ‖_F/‖X0‖_F = √n·‖b‖/‖X0‖_F).
    assert procrustes_residual(x, y, raw=True) == pytest.approx(0.0, abs=1e-12)
    # ... and a rotation on top of the shift counts in raw, not in aligned: raw ≥ aligned always.
    q = _rotation(x.shape[1])
    z = x @ q + b
    assert procrustes_residual(x, z) == pytest.approx(0.0, abs=1e-12)
    assert procrustes_residual(x, z, raw=True) == pytest.approx(procrustes_residual(x, x @ q, raw=True), rel=1e-10)
    w = _data(seed=3) + b
    assert procrustes_residual(x, w) <= procrustes_residual(x, w, raw=True)
    assert gram_distortion(x, y) > 0.05  # no centring, so the cosines move


# --- symmetry and agreement between forms -----------------------------------------------------------


def test_cka_symmetry_and_forms_agree():
    x, y = _data(seed=0), _data(seed=1, d=5)  # different feature counts are allowed
    for f in CKA_FUNCS:
        assert f(x, y) == pytest.approx(f(y, x), abs=1e-14)
    assert linear_cka(x, y) == pytest.approx(linear_cka_gram(x, y), rel=1e-10)
    assert 0.0 <= linear_cka(x, y) <= 1.0


# Hand example: X0 has orthogonal centred columns c1 = (1,0,−1), c2 = (1,−2,1); ‖c1‖² = 2, ‖c2‖² = 6.
# X1 = X0·D·Qᵀ with D = diag(2, 1) and Q the 90° rotation [[0,−1],[1,0]]: row (x, y) of X0D maps to
# (−y, x), so X0D = [[2,1],[0,−2],[−2,1]] → X1 = [[−1,2],[2,0],[−1,−2]] (still column-centred).
X0_HAND = [[1.0, 1.0], [0.0, -2.0], [-1.0, 1.0]]
X1_HAND = [[-1.0, 2.0], [2.0, 0.0], [-1.0, -2.0]]


def test_hand_example_cka():
    # CKA is rotation invariant, so use X0D: X0ᵀX0 = diag(2,6), ‖·‖ = √40; (X0D)ᵀ(X0D) = diag(8,6),
    # ‖·‖ = 10; X0ᵀ(X0D) = diag(4,6), ‖·‖² = 52.  CKA = 52 / (√40 · 10).
    expected = 52 / (math.sqrt(40) * 10)
    for f in CKA_FUNCS:
        assert f(X0_HAND, X1_HAND) == pytest.approx(expected, abs=1e-12)


def test_hand_example_procrustes():
    # X1ᵀX0 = Q·D·diag(2,6) = Q·diag(4,6) → R = UVᵀ = Q, X1R = X0D, residual ‖X0(D − I)‖ = ‖c1‖ = √2,
    # ‖X0‖ = √8 → 0.5.  Raw: X1 − X0 = [[−2,1],[2,2],[0,−3]], ‖·‖² = 22 → √(22/8).
    res = procrustes(X0_HAND, X1_HAND)
    assert isinstance(res, ProcrustesResult)
    assert res.aligned == pytest.approx(0.5, abs=1e-12)
    assert res.raw == pytest.approx(math.sqrt(22 / 8), abs=1e-12)
    assert procrustes_residual(X0_HAND, X1_HAND) == res.aligned
    assert procrustes_residual(X0_HAND, X1_HAND, raw=True) == res.raw


# --- minibatch (unbiased) CKA -----------------------------------------------------------------------


def test_minibatch_cka_close_to_full_for_large_n():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4096, 6))
    y = x @ rng.normal(size=(6, 6)) + 0.5 * rng.normal(size=(4096, 6))
    full = linear_cka(x, y)
    # The biased estimator's excess is O(d/n) here, so the two agree to about 1e-2.
    assert minibatch_cka(x, y, batch_size=512) == pytest.approx(full, abs=0.02)
    assert minibatch_cka(x, y, batch_size=512, seed=0) == minibatch_cka(x, y, batch_size=512, seed=0)


def test_minibatch_cka_removes_bias_for_independent_data():
    # Independent inputs: biased CKA ≈ d/n > 0, the unbiased estimate is centred on 0.
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(2048, 32)), rng.normal(size=(2048, 32))
    full = linear_cka(x, y)
    assert full > 0.01
    assert abs(minibatch_cka(x, y, batch_size=256)) < full / 2


# --- inputs ---------------------------------------------------------------------------------------


def test_torch_inputs_match_numpy():
    x = _data()
    y = x @ np.diag(np.linspace(1.0, 2.0, x.shape[1]))
    tx, ty = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    x32, y32 = tx.double().numpy(), ty.double().numpy()  # same values as the tensors hold
    assert linear_cka(tx, ty) == pytest.approx(linear_cka(x32, y32), abs=1e-12)
    assert procrustes_residual(tx, ty) == pytest.approx(procrustes_residual(x32, y32), abs=1e-12)
    assert isinstance(gram_distortion(tx.bfloat16(), ty.bfloat16()), float)


def test_gram_distortion_subsample_is_seeded():
    x, y = _data(n=300, seed=5), _data(n=300, seed=6)
    a = gram_distortion(x, y, max_tokens=100, seed=1)
    assert a == gram_distortion(x, y, max_tokens=100, seed=1)
    assert a != gram_distortion(x, y, max_tokens=100, seed=2)
    assert gram_distortion(x, y, max_tokens=300) == gram_distortion(x, y, max_tokens=10_000)


ALL = [
    linear_cka,
    linear_cka_gram,
    minibatch_cka,
    procrustes_residual,
    lambda a, b: procrustes_residual(a, b, raw=True),
    procrustes,
    gram_distortion,
]


@pytest.mark.parametrize("f", ALL)
def test_mismatched_tokens_names_both_shapes(f):
    with pytest.raises(ArenaError, match=r"X0 shape \(10, 3\).*X1 shape \(9, 3\)"):
        f(np.ones((10, 3)), np.ones((9, 3)))


@pytest.mark.parametrize("f", ALL)
def test_nan_and_inf_are_reported(f):
    y = _data(n=10, d=3)
    y[0, 0], y[1, 1], y[2, 2] = np.nan, np.nan, np.inf
    with pytest.raises(ArenaError, match=r"X1 contains 3 non-finite values \(2 NaN, 1 inf\)"):
        f(_data(n=10, d=3), y)


@pytest.mark.parametrize("f", ALL)
def test_not_2d(f):
    with pytest.raises(ArenaError, match=r"X0 must be 2-D .*\(10,\)"):
        f(np.ones(10), np.ones((10, 3)))


@pytest.mark.parametrize("f", [linear_cka, procrustes_residual, gram_distortion])
def test_too_few_tokens(f):
    with pytest.raises(ArenaError, match="at least 2 tokens"):
        f(np.ones((1, 3)), np.ones((1, 3)))


def test_other_validation():
    with pytest.raises(ArenaError, match="batch_size must be at least 4"):
        minibatch_cka(_data(), _data(), batch_size=2)
    with pytest.raises(ArenaError, match="same number of features"):
        procrustes_residual(_data(d=3), _data(d=4))
    with pytest.raises(ArenaError, match="numeric"):
        linear_cka([["a", "b"], ["c", "d"]], _data(n=2, d=2))
    assert math.isnan(linear_cka(np.ones((5, 2)), _data(n=5, d=2)))  # zero variance: undefined
