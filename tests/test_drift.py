"""CSD against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import arena.analysis.drift as drift
from arena.analysis.drift import CSD_KEYS, csd, csd_ratio
from arena.errors import ArenaError


def test_diagonal_update_on_unit_vectors():
    # ΔW = diag(2, 3), W0 = I, h = e1, e2: ‖ΔW h‖² = 4, 9 → abs = 6.5; ‖W0 h‖² = 1 → rel = 6.5;
    # ‖ΔW‖_F² = 13, E‖h‖² = 1 → un = 6.5/13 = 0.5 = 1/in_features (E hhᵀ = I/2 is isotropic).
    out = csd(np.diag([2.0, 3.0]), np.eye(2), np.eye(2))
    assert out == pytest.approx({"abs": 6.5, "rel": 6.5, "un": 0.5}, abs=1e-10)


def test_rectangular_hand_case():
    # ΔW = [[1,0],[0,2],[1,1]], W0 = [[1,0],[0,1],[0,0]], tokens h = (1,0), (0,1), (1,1).
    # ΔW h = (1,0,1), (0,2,1), (1,2,2) → ‖·‖² = 2, 5, 9 → abs = 16/3.
    # W0 h = (1,0,0), (0,1,0), (1,1,0) → ‖·‖² = 1, 1, 2 → mean 4/3 → rel = 4.
    # ‖ΔW‖_F² = 7, E‖h‖² = (1 + 1 + 2)/3 = 4/3 → un = (16/3) / (7 · 4/3) = 4/7.
    dw = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
    w0 = [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    h = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    assert csd(dw, h, w0) == pytest.approx({"abs": 16 / 3, "rel": 4.0, "un": 4 / 7}, abs=1e-10)


def test_input_orthogonal_to_update_gives_zero():
    # ΔW only reads feature 2; inputs only have feature 1.
    out = csd([[0.0, 1.0], [0.0, 5.0]], [[1.0, 0.0], [3.0, 0.0]], np.eye(2))
    assert out == {"abs": 0.0, "rel": 0.0, "un": 0.0}


def test_zero_update_is_zero():
    rng = np.random.default_rng(0)
    out = csd(np.zeros((5, 4)), rng.normal(size=(7, 4)), rng.normal(size=(5, 4)))
    assert out == {"abs": 0.0, "rel": 0.0, "un": 0.0}


def test_scaling_laws():
    # abs and rel are quadratic in ΔW and in h; un is invariant to both scales.
    rng = np.random.default_rng(1)
    dw, h, w0 = rng.normal(size=(6, 4)), rng.normal(size=(20, 4)), rng.normal(size=(6, 4))
    base = csd(dw, h, w0)
    scaled = csd(3.0 * dw, 2.0 * h, w0)
    assert scaled["abs"] == pytest.approx(36.0 * base["abs"], rel=1e-12)
    assert scaled["rel"] == pytest.approx(9.0 * base["rel"], rel=1e-12)
    assert scaled["un"] == pytest.approx(base["un"], rel=1e-12)
    assert 0.0 <= base["un"] <= 1.0


def test_chunking_matches_direct(monkeypatch):
    rng = np.random.default_rng(2)
    dw, h, w0 = rng.normal(size=(3, 5)), rng.normal(size=(11, 5)), rng.normal(size=(3, 5))
    direct = np.mean(np.sum((h @ dw.T) ** 2, axis=1))
    monkeypatch.setattr(drift, "_CHUNK", 4)  # 11 tokens → chunks of 4, 4, 3
    assert csd(dw, h, w0)["abs"] == pytest.approx(direct, rel=1e-12)


def test_torch_inputs():
    out = csd(torch.diag(torch.tensor([2.0, 3.0])).bfloat16(), torch.eye(2), torch.eye(2))
    assert out["abs"] == pytest.approx(6.5)


def test_ratio_hand_case():
    g = {"abs": 6.0, "rel": 0.5, "un": 0.0}
    t = {"abs": 2.0, "rel": 0.25, "un": 0.0}
    r = csd_ratio(g, t)
    assert r["abs"] == pytest.approx(3.0) and r["rel"] == pytest.approx(2.0)
    assert r["un"] == 0.0  # 0 / (0 + eps)
    assert set(r) == set(CSD_KEYS)


def test_ratio_zero_target_and_infinities():
    assert csd_ratio({"abs": 1.0, "rel": 1.0, "un": 1.0}, {"abs": 0.0, "rel": 0.0, "un": 0.0})["abs"] == 1e12
    inf = math.inf
    r = csd_ratio({"abs": inf, "rel": 1.0, "un": inf}, {"abs": 1.0, "rel": inf, "un": inf})
    assert r["abs"] == inf and r["rel"] == 0.0 and math.isnan(r["un"])


def test_ratio_validation():
    with pytest.raises(ArenaError, match="target is missing key 'un'"):
        csd_ratio({"abs": 1, "rel": 1, "un": 1}, {"abs": 1, "rel": 1})
    with pytest.raises(ArenaError, match="negative"):
        csd_ratio({"abs": -1, "rel": 1, "un": 1}, {"abs": 1, "rel": 1, "un": 1})


def test_in_features_mismatch_names_shapes():
    msg = r"in_features mismatch: h has shape \(7, 3\).*delta_w has shape \(5, 4\)"
    with pytest.raises(ArenaError, match=msg):
        csd(np.ones((5, 4)), np.ones((7, 3)), np.ones((5, 4)))


def test_w0_shape_mismatch():
    with pytest.raises(ArenaError, match=r"w0 shape \(4, 4\) and delta_w shape \(5, 4\)"):
        csd(np.ones((5, 4)), np.ones((7, 4)), np.ones((4, 4)))


def test_nan_and_dims():
    h = np.ones((7, 4))
    h[3, 2] = np.nan
    with pytest.raises(ArenaError, match=r"h contains 1 non-finite values \(1 NaN, 0 inf\)"):
        csd(np.ones((5, 4)), h, np.ones((5, 4)))
    with pytest.raises(ArenaError, match="delta_w must be 2-D"):
        csd(np.ones(4), np.ones((7, 4)), np.ones((5, 4)))
