#!/usr/bin/env bash
# The self-distillation comparison of docs/objectives.md on CPU: the two start models, then the sweep.
# Idempotent: finished runs are skipped (arena train / arena sweep resume or skip what is done).
set -euo pipefail
cd "$(dirname "$0")/.."
START=results/selfdistill-arith-start
arena train --config configs/selfdistill-arith-start.yaml --out "$START/warm"
arena train --config configs/selfdistill-arith-start.yaml --steps 100 --set train.warmup_steps=4 --out "$START/teacher"
arena sweep configs/selfdistill-arith-cpu.yaml "$@"
arena report results/selfdistill-arith-cpu --format md
arena report results/selfdistill-arith-cpu
