#!/usr/bin/env bash
# The README's main job: install, prepare SmolLM2-135M-Instruct offline, and run the quickstart
# sweep on the CPU: full FT / LoRA / PiSSA / VeRA / OFT, SFT on the math target, evaluated on the
# general and target suites, with diagnostics and one interpolation curve; then the report.
# Re-running resumes: finished runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh runtime
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
arena models prepare
arena sweep configs/quickstart.yaml "$@"
# The report picks its axes by signal-to-noise (arena/results/scales.py): at 135M on GSM8K the
# accuracies are noise, so it opens on the NLL proxies and says why.
arena report results/quickstart --format html
echo "open results/quickstart/report.html, or run: arena dashboard --results results/quickstart"
