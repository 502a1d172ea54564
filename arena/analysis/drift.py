"""Capability-conditioned drift (CSD) of one linear module (PEFT-Arena's definition; see
docs/design.md "Diagnostics").

A weight update changes a module's output only through ΔW h on the inputs the module actually sees,
so CSD weights ΔW = W1 − W0 by the **base model's** per-token inputs h on a distribution D (general
prompts or target prompts) instead of looking at ΔW alone:

    CSD_abs(D) = E_t ‖ΔW h_t‖²
    CSD_rel(D) = E_t ‖ΔW h_t‖² / (E_t ‖W0 h_t‖² + ε)                  (change relative to the signal)
    CSD_un(D)  = E_t ‖ΔW h_t‖² / ((‖ΔW‖_F² + ε)(E_t ‖h_t‖² + ε))      (update- and input-scale free)

CSD_un lies in [0, 1] (E‖ΔW h‖² ≤ ‖ΔW‖₂² E‖h‖² ≤ ‖ΔW‖_F² E‖h‖²): it is 1/in_features for isotropic
inputs (E h hᵀ ∝ I) and grows towards 1 as ΔW's row space lines up with where D's inputs have
energy. The ratio CSD_G / CSD_T says whether an update moves general-prompt activations more or less
than the target ones it was trained for.

Computed in float64 (see geometry.py for why); h is processed in token chunks so the n × out
product never has to exist in full for wide modules (e.g. a 7B model's 18,944-wide MLP).
"""

from __future__ import annotations

import math

import torch

from arena.analysis.geometry import as_matrix
from arena.errors import ArenaError

CSD_KEYS = ("abs", "rel", "un")
_CHUNK = 2048  # tokens per matmul: bounds memory at chunk × out float64 values


def _mean_sq_norm(a: torch.Tensor, h: torch.Tensor) -> float:
    """E_t ‖A h_t‖² = ‖H Aᵀ‖_F² / n, accumulated over token chunks."""
    total = 0.0
    for start in range(0, h.shape[0], _CHUNK):
        total += float((h[start : start + _CHUNK] @ a.T).square().sum())
    return total / h.shape[0]


def csd(delta_w, h, w0, eps: float = 1e-12) -> dict[str, float]:
    """Capability-conditioned drift of a linear module y = W x on inputs `h`.

    Args:
        delta_w: ΔW = W1 − W0, shape (out_features, in_features) (torch's nn.Linear layout).
        h: the base model's inputs to this module, shape (tokens, in_features); at least 1 token.
        w0: the base weight W0, same shape as delta_w.
        eps: ε in the denominators, so ΔW = 0 or h = 0 gives 0 instead of 0/0.

    Returns {"abs": CSD_abs, "rel": CSD_rel, "un": CSD_un} as Python floats (formulas in the
    module docstring). All three are 0 when ΔW = 0.
    """
    dw = as_matrix(delta_w, "delta_w", min_rows=1)
    w = as_matrix(w0, "w0", min_rows=1, device=dw.device)
    x = as_matrix(h, "h", min_rows=1, device=dw.device)
    if w.shape != dw.shape:
        raise ArenaError(
            f"w0 and delta_w must have the same shape (out_features, in_features); got w0 shape "
            f"{tuple(w.shape)} and delta_w shape {tuple(dw.shape)}"
        )
    if x.shape[1] != dw.shape[1]:
        raise ArenaError(
            f"in_features mismatch: h has shape {tuple(x.shape)} (tokens, in_features) but delta_w "
            f"has shape {tuple(dw.shape)} (out_features, in_features); h's columns must equal "
            f"delta_w's columns"
        )
    drift = _mean_sq_norm(dw, x)
    signal = _mean_sq_norm(w, x)
    dw_fro2 = float(dw.square().sum())
    h_energy = float(x.square().sum()) / x.shape[0]
    return {
        "abs": drift,
        "rel": drift / (signal + eps),
        "un": drift / ((dw_fro2 + eps) * (h_energy + eps)),
    }


def _safe_ratio(g: float, t: float, eps: float) -> float:
    # Spelled out so the edge cases are chosen, not inherited: NaN in → NaN out; ∞/∞ is undefined
    # (NaN); ∞ general drift over finite target is ∞; finite over ∞ is 0; 0/0 is 0 thanks to eps.
    if math.isnan(g) or math.isnan(t):
        return math.nan
    if math.isinf(g) and math.isinf(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    return g / (t + eps)


def csd_ratio(general: dict, target: dict, eps: float = 1e-12) -> dict[str, float]:
    """CSD_G / CSD_T per key ("abs", "rel", "un"): G / (T + eps).

    > 1 means the update moves general-prompt activations more than target-prompt ones (relative
    to each measure's normalisation), which PEFT-Arena relates to forgetting. Inputs are `csd`
    results for the general and the target distribution. Keys missing from either dict or negative
    values raise ArenaError; infinities are handled explicitly (see `_safe_ratio`), never raised.
    """
    out: dict[str, float] = {}
    for key in CSD_KEYS:
        for label, d in (("general", general), ("target", target)):
            if key not in d:
                raise ArenaError(f"csd_ratio: {label} is missing key {key!r}; expected keys {list(CSD_KEYS)}")
            if float(d[key]) < 0:
                raise ArenaError(f"csd_ratio: {label}[{key!r}] = {d[key]!r} is negative; CSD values are ≥ 0")
        out[key] = _safe_ratio(float(general[key]), float(target[key]), eps)
    return out
