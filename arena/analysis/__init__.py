"""Why a run forgets: pure metrics (geometry, drift, spectra) and the model-level passes that use
them (activation capture, per-run diagnostics, interpolation paths between base and tuned weights)."""
