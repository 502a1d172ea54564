#!/usr/bin/env bash
# MOPD on CPU (docs/self_distillation.md, "MOPD, measured"): one SFT teacher per arith operation
# ('+' and '-', 60 steps each), then the warm start (configs/selfdistill-arith-start.yaml) distilled
# from both, each prompt routed by its `op` to its teacher. Idempotent: finished runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
START=results/selfdistill-arith-start
D=results/mopd-demo
arena train --config configs/selfdistill-arith-start.yaml --out "$START/warm"
for op in "+" "-"; do
  name=$([ "$op" = "+" ] && echo add || echo sub)
  arena train --config configs/selfdistill-arith-start.yaml --steps 60 --set "target.ops=['$op']" --out "$D/teacher-$name"
done
arena train --set "model.init_from=$START/warm" --method lora --target arith --objective mopd \
  --set target.n_train=1000 --set method.rank=8 --set method.alpha=16 --set method.dropout=0.0 \
  --set objective.domain_key=op --set "objective.teachers={'+': $D/teacher-add, '-': $D/teacher-sub}" \
  --set objective.n_samples=4 --set objective.max_new_tokens=24 --steps 30 --set train.lr=5e-4 \
  --set train.warmup_steps=2 --set train.schedule=constant --set train.batch_size=4 \
  --set probe.heldout=128 --set probe.greedy=128 --set probe.max_new_tokens=16 --set train.progress=false \
  --out "$D/mopd"
