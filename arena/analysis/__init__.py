"""Why a run forgets: pure metrics and the model-level passes that use them.

- metrics/: the diagnostic-metric registry (torch-free metadata: labels, directions, summary rules);
  drift.py, geometry.py, spectra.py: the formulas it computes with.
- diagnostics.py (`analyze_run`): per-module diagnostics of a run, fed by module_select.py (which
  modules), prompts.py (which prompts), capture.py / capture_cache.py (their activations) and
  module_metrics.py (every registered metric of one module, and the summary).
- interpolation.py (`interpolate_run`): the base -> tuned curve θ(α), from interpolator.py (the
  weights path, or the method's own generator path), curve_scorer.py and tradeoff.py.
- settings.py: the typed settings of both; tables.py: their text output.
"""
