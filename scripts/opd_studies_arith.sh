#!/usr/bin/env bash
# The five OPD studies of docs/self_distillation.md at arith scale on CPU: the start models and
# teachers, then one sweep per study, then one report over all of them. Idempotent: finished runs
# are skipped. Extra arguments go to every `arena sweep` (e.g. --set seeds=[0,1]).
set -euo pipefail
cd "$(dirname "$0")/.."
START=results/selfdistill-arith-start
S=results/opd-studies-start
arena train --config configs/selfdistill-arith-start.yaml --out "$START/warm"
arena train --config configs/selfdistill-arith-start.yaml --steps 100 --set train.warmup_steps=4 --out "$START/teacher"
arena train --config configs/opd-studies-rl-teacher.yaml --out "$S/rl-teacher"
arena train --config configs/selfdistill-arith-start.yaml --set "objective.responses_from=$START/teacher" \
    --set objective.responses_max_new_tokens=24 --out "$S/coldstart"
for study in teachers coldstart prompts length; do
    arena sweep "configs/opd-study-$study.yaml" "$@"
done
arena report results/opd-studies --format md
arena report results/opd-studies
