#!/usr/bin/env bash
# The CPU study (configs/cpu-study.yaml): five methods x 3 seeds, SFT on generated arithmetic,
# SmolLM2-135M-Instruct, every method interpolated, an lr scan; then the report, whose headline is
# the verdict at matched plasticity. Re-running resumes: finished runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh runtime
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
arena models prepare
arena sweep configs/cpu-study.yaml "$@"
arena report results/cpu-study --format html
arena report results/cpu-study --format md
echo "open results/cpu-study/report.html (or report.md), or run: arena dashboard --results results/cpu-study"
