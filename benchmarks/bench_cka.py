"""Time the geometry/drift metrics at the design's sizes; run as `python benchmarks/bench_cka.py`.

Checks that feature-space CKA (O(n·d²)) and Gram-form CKA (O(n²·d)) agree to 1e-6 relative on
4,096 tokens × 576 features (SmolLM2-135M hidden size) and × 1,536 (its MLP width), and prints a
table of best-of-3 wall times (time.perf_counter) for CKA in both forms, minibatch CKA, Procrustes,
Gram distortion, CSD and the spectral profile. Inputs are fp32 tensors, as the diagnostics pass
hands them over, so the times include the float64 conversion.
"""

from __future__ import annotations

import os
import sys
import time

# Running the file directly puts benchmarks/ (not the repo root) on sys.path; the package need not
# be installed for a benchmark.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from arena.analysis.drift import csd  # noqa: E402
from arena.analysis.geometry import (  # noqa: E402
    gram_distortion,
    linear_cka,
    linear_cka_gram,
    minibatch_cka,
    procrustes_residual,
)
from arena.analysis.spectra import spectral_profile  # noqa: E402

N_TOKENS = 4096
REPEATS = 3
REL_TOL = 1e-6


def best_of(fn, repeats: int = REPEATS) -> tuple[float, object]:
    """Best wall time over `repeats` calls (the minimum is the least noisy estimate) and the result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> int:
    gen = torch.Generator().manual_seed(0)
    rows: list[tuple[str, str, float, str]] = []

    for d in (576, 1536):
        shape = f"{N_TOKENS}x{d}"
        x0 = torch.randn(N_TOKENS, d, generator=gen)
        # A tuned model's outputs: mostly the base ones plus a perturbation, as in the real use.
        x1 = x0 + 0.3 * torch.randn(N_TOKENS, d, generator=gen) + 0.1
        t_feat, c_feat = best_of(lambda: linear_cka(x0, x1))
        t_gram, c_gram = best_of(lambda: linear_cka_gram(x0, x1))
        rel = abs(c_feat - c_gram) / abs(c_feat)
        assert rel <= REL_TOL, f"CKA forms disagree at {shape}: {c_feat!r} vs {c_gram!r} (rel {rel:.2e})"
        rows.append(("linear_cka (feature, n·d²)", shape, t_feat, f"CKA={c_feat:.10f}"))
        note = f"rel diff {rel:.1e}; {t_gram / t_feat:.1f}x feature time"
        rows.append(("linear_cka_gram (n×n, n²·d)", shape, t_gram, note))
        t, v = best_of(lambda: minibatch_cka(x0, x1, batch_size=1024))
        rows.append(("minibatch_cka (batch 1024)", shape, t, f"CKA={v:.6f}"))
        t, v = best_of(lambda: procrustes_residual(x0, x1))
        rows.append(("procrustes_residual", shape, t, f"d={v:.6f}"))
        t, v = best_of(lambda: gram_distortion(x0, x1))
        rows.append(("gram_distortion (1024 tokens)", shape, t, f"d={v:.6f}"))

    h = torch.randn(N_TOKENS, 576, generator=gen)
    for out in (576, 1536):
        w0 = torch.randn(out, 576, generator=gen) / 24.0
        dw = 0.01 * torch.randn(out, 576, generator=gen)
        t, v = best_of(lambda: csd(dw, h, w0))
        rows.append(("csd", f"dW {out}x576, h {N_TOKENS}x576", t, f"rel={v['rel']:.3e}"))
        t, v = best_of(lambda: spectral_profile(dw, w0))
        rows.append(("spectral_profile", f"dW {out}x576", t, f"eff.rank={v['effective_rank']:.1f}"))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {REPEATS}, float64 compute")
    print(f"{'metric':<32} {'input':<26} {'seconds':>9}  note")
    print("-" * 90)
    for name, shape, secs, note in rows:
        print(f"{name:<32} {shape:<26} {secs:>9.4f}  {note}")
    print(f"feature-space and Gram-form CKA agree to {REL_TOL:g} relative at both sizes: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
