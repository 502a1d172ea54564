"""Representation geometry between a base model's (X0) and a tuned model's (X1) module outputs.

Inputs are 2-D (tokens × features) torch tensors or numpy arrays for the same tokens in the same
order. Results are Python floats.

Precision: everything is computed in float64 on the device of X0. Activations arrive in bf16/fp32,
but the quantities here are small differences of large sums (CKA near 1, residuals near 0). On
4,096 × 576 random data the feature-space and Gram forms of CKA agree to ~1e-13 in float64 but differ
by ~2e-3 in fp32 (the n × n double-centring loses the digits), and the tests check closed forms at
1e-12. The cost is acceptable at the design's sizes (n = 4,096 tokens, d up to a few thousand:
n·d² ≈ 10 GFLOP at d = 1,536, about 0.4 s on 2 CPU cores; see benchmarks/bench_cka.py). A constant
(zero-variance) input leaves CKA and Gram distortion undefined; they return NaN rather than raise,
so one degenerate module does not abort a whole diagnostics pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ArenaError

_F64 = torch.float64


def as_matrix(x, name: str, *, min_rows: int = 2, device: torch.device | None = None) -> torch.Tensor:
    """Return `x` as a finite float64 2-D tensor, raising ArenaError with a message naming `name`."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.from_numpy(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise ArenaError(f"{name} must be a numeric tensor or array; got {type(x).__name__} ({e})") from e
    if t.dim() != 2:
        raise ArenaError(f"{name} must be 2-D (tokens × features); got shape {tuple(t.shape)}")
    if t.shape[0] < min_rows:
        raise ArenaError(f"{name} needs at least {min_rows} tokens (rows); got shape {tuple(t.shape)}")
    t = t.to(device=device if device is not None else t.device, dtype=_F64)
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(bad.sum()) - n_nan
        raise ArenaError(
            f"{name} contains {n_nan + n_inf} non-finite values ({n_nan} NaN, {n_inf} inf) "
            f"out of {t.numel()}; shape {tuple(t.shape)}"
        )
    return t


def _pair(X0, X1, *, same_features: bool = False, min_rows: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    a = as_matrix(X0, "X0", min_rows=min_rows)
    b = as_matrix(X1, "X1", min_rows=min_rows, device=a.device)
    if a.shape[0] != b.shape[0]:
        raise ArenaError(
            f"X0 and X1 must hold the same tokens (rows); got X0 shape {tuple(a.shape)} "
            f"and X1 shape {tuple(b.shape)}"
        )
    if same_features and a.shape[1] != b.shape[1]:
        raise ArenaError(
            f"X0 and X1 must have the same number of features (columns); got X0 shape "
            f"{tuple(a.shape)} and X1 shape {tuple(b.shape)}"
        )
    return a, b


def _centre(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=0, keepdim=True)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> float:
    den_f = float(den)
    return float(num) / den_f if den_f > 0.0 else float("nan")


def linear_cka(X0, X1) -> float:
    """Linear CKA, feature-space form (Kornblith et al. 2019, "Similarity of Neural Network
    Representations Revisited", ICML).

    With column-centred X0 (n × d0) and X1 (n × d1):
        CKA = ‖X0ᵀ X1‖_F² / (‖X0ᵀ X0‖_F · ‖X1ᵀ X1‖_F).
    Cost O(n·d²), so it is the right form when tokens outnumber features. Invariant to orthogonal
    transforms and isotropic scaling of either input and (through centring) to translation.
    Feature counts may differ. NaN when either input has zero variance.
    """
    a, b = _pair(X0, X1)
    a, b = _centre(a), _centre(b)
    num = torch.linalg.matrix_norm(a.T @ b) ** 2
    den = torch.linalg.matrix_norm(a.T @ a) * torch.linalg.matrix_norm(b.T @ b)
    return _ratio(num, den)


def linear_cka_gram(X0, X1) -> float:
    """Linear CKA, Gram (HSIC) form (Kornblith et al. 2019, eq. 3; Gretton et al. 2005 for HSIC).

    K = X0 X0ᵀ, L = X1 X1ᵀ (n × n), H = I − 11ᵀ/n, K̃ = HKH, L̃ = HLH:
        CKA = ⟨K̃, L̃⟩_F / (‖K̃‖_F · ‖L̃‖_F).
    Equal to `linear_cka` (⟨K̃, L̃⟩ = ‖X0cᵀ X1c‖_F²); kept to cross-check it. Cost O(n²·d) time and
    O(n²) memory, so it is only preferable when features outnumber tokens.
    """
    a, b = _pair(X0, X1)

    def double_centre(g: torch.Tensor) -> torch.Tensor:
        # HGH without forming H: subtract row and column means, add back the grand mean.
        return g - g.mean(0, keepdim=True) - g.mean(1, keepdim=True) + g.mean()

    k, l = double_centre(a @ a.T), double_centre(b @ b.T)
    num = (k * l).sum()
    den = torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l)
    return _ratio(num, den)


def _hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC (Song et al. 2012, eq. 5) of Gram matrices whose diagonals are already zero."""
    n = k.shape[0]
    k1, l1 = k.sum(1), l.sum(1)  # K̃1 and L̃1
    trace_kl = (k * l).sum()  # tr(K̃L̃) for symmetric K̃, L̃
    return (trace_kl + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k1 @ l1)) / (n * (n - 3))


def minibatch_cka(X0, X1, batch_size: int = 1024, seed: int = 0) -> float:
    """Minibatch linear CKA with the unbiased HSIC estimator (Nguyen, Raghu & Kornblith 2021, "Do
    Wide and Deep Networks Learn the Same Things?", ICLR, eq. 3; estimator from Song et al. 2012).

    Tokens are shuffled with numpy's Generator(seed) and split into k batches of `batch_size`
    (a final remainder of fewer than 4 tokens is dropped: the estimator needs n ≥ 4). For each batch,
    K = X0_b X0_bᵀ and L = X1_b X1_bᵀ with zeroed diagonals, and
        HSIC₁(K, L) = [tr(KL) + (1ᵀK1)(1ᵀL1)/((n−1)(n−2)) − 2/(n−2)·1ᵀKL1] / (n(n−3)),
        CKA = mean HSIC₁(K, L) / sqrt(mean HSIC₁(K, K) · mean HSIC₁(L, L)).
    Unlike the biased full-batch estimate, its expectation does not depend on the batch size, and
    memory is O(batch²) however many tokens there are. NaN if the denominator is not positive.
    """
    if int(batch_size) < 4:
        raise ArenaError(f"batch_size must be at least 4 (unbiased HSIC needs n ≥ 4); got {batch_size}")
    a, b = _pair(X0, X1, min_rows=4)
    n = a.shape[0]
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n)).to(a.device)
    xy = xx = yy = torch.zeros((), dtype=_F64, device=a.device)
    batches = 0
    for start in range(0, n, int(batch_size)):
        idx = perm[start : start + int(batch_size)]
        if idx.numel() < 4:
            continue
        k, l = a[idx] @ a[idx].T, b[idx] @ b[idx].T
        k.fill_diagonal_(0.0)
        l.fill_diagonal_(0.0)
        xy, xx, yy = xy + _hsic_unbiased(k, l), xx + _hsic_unbiased(k, k), yy + _hsic_unbiased(l, l)
        batches += 1
    # The 1/batches factors cancel between numerator and denominator.
    return _ratio(xy, torch.sqrt(torch.clamp(xx * yy, min=0.0)))


@dataclass(frozen=True)
class ProcrustesResult:
    """Aligned (centred, rotated) and raw (centred, not rotated) relative residuals of X1 against X0."""

    aligned: float
    raw: float


def _procrustes_aligned(a: torch.Tensor, b: torch.Tensor, eps: float) -> float:
    a, b = _centre(a), _centre(b)
    u, _, vh = torch.linalg.svd(b.T @ a, full_matrices=False)
    # Apply R explicitly instead of the closed form ‖X1‖² + ‖X0‖² − 2·Σσ, which cancels
    # catastrophically exactly where it matters (residual ≈ 0).
    resid = torch.linalg.matrix_norm(b @ (u @ vh) - a)
    return float(resid) / (float(torch.linalg.matrix_norm(a)) + eps)


def _raw_residual(a: torch.Tensor, b: torch.Tensor, eps: float) -> float:
    # Centred like the aligned residual, so raw − aligned is what the rotation absorbs and
    # aligned ≤ raw always (R = I is a candidate); uncentred, a mean shift of the activations
    # (which Procrustes, CKA and the paper's residual ignore) dominated it.
    a, b = _centre(a), _centre(b)
    return float(torch.linalg.matrix_norm(b - a)) / (float(torch.linalg.matrix_norm(a)) + eps)


def procrustes_residual(X0, X1, raw: bool = False, eps: float = 1e-12) -> float:
    """Orthogonal-Procrustes residual (Schönemann 1966; used for forgetting by PEFT-Arena).

    Centre both; R = U Vᵀ from the SVD U Σ Vᵀ = X1ᵀ X0 (the orthogonal R minimising ‖X1 R − X0‖_F);
        d_proc = ‖X1 R − X0‖_F / (‖X0‖_F + eps).
    Invariant to rotation and translation of X1 but not to scale: X1 = c·X0 (c > 0) gives |c − 1|.
    With raw=True: ‖X̄1 − X̄0‖_F / (‖X̄0‖_F + eps) on the centred inputs X̄, without the rotation
    (R = I), so raw ≥ aligned and the gap is the part of the change a rotation explains.
    """
    a, b = _pair(X0, X1, same_features=True)
    return _raw_residual(a, b, eps) if raw else _procrustes_aligned(a, b, eps)


def procrustes(X0, X1, eps: float = 1e-12) -> ProcrustesResult:
    """Both residuals of `procrustes_residual` (aligned and raw) from one validation pass."""
    a, b = _pair(X0, X1, same_features=True)
    return ProcrustesResult(aligned=_procrustes_aligned(a, b, eps), raw=_raw_residual(a, b, eps))


def gram_distortion(X0, X1, max_tokens: int = 1024, seed: int = 0, eps: float = 1e-12) -> float:
    """Relative change of the token-token cosine-similarity matrix (PEFT-Arena's Gram distortion).

    Z = rows of X L2-normalised (no centring; a row's norm is floored at eps so all-zero rows stay
    zero instead of dividing by zero); when n > max_tokens
    the same `max_tokens` rows of both, chosen by numpy Generator(seed) without replacement, are kept:
        d_gram = ‖Z1 Z1ᵀ − Z0 Z0ᵀ‖_F / ‖Z0 Z0ᵀ‖_F.
    Invariant to orthogonal transforms of the features and to per-token scaling; not to translation
    or non-orthogonal transforms. Feature counts may differ.
    """
    if int(max_tokens) < 2:
        raise ArenaError(f"max_tokens must be at least 2; got {max_tokens}")
    a, b = _pair(X0, X1)
    n = a.shape[0]
    if n > max_tokens:
        # Sorted so the subsample keeps token order (irrelevant to the value, easier to debug).
        idx = np.sort(np.random.default_rng(seed).choice(n, size=int(max_tokens), replace=False))
        sel = torch.from_numpy(idx).to(a.device)
        a, b = a[sel], b[sel]
    z0 = a / torch.clamp(torch.linalg.vector_norm(a, dim=1, keepdim=True), min=eps)
    z1 = b / torch.clamp(torch.linalg.vector_norm(b, dim=1, keepdim=True), min=eps)
    g0, g1 = z0 @ z0.T, z1 @ z1.T
    return _ratio(torch.linalg.matrix_norm(g1 - g0), torch.linalg.matrix_norm(g0))
