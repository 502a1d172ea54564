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
# At 135M the GSM8K/MATH accuracies of an 8-document subset are floor noise: rank on the NLL proxies.
arena report results/quickstart --format html --scale proxy
echo "open results/quickstart/report.html, or run: arena dashboard --results results/quickstart"
