#!/usr/bin/env bash
# Install arena into the current Python environment.
#   scripts/install.sh            # runtime (train, eval)
#   scripts/install.sh dev        # + everything the test suite needs
# On a CPU-only machine torch is pinned to the 2.13.0 CPU wheel first (a plain `torch`
# requirement would pull a multi-GB CUDA build). On a GPU machine set ARENA_TORCH=skip and
# install the CUDA build of torch you need beforehand (see README, "GPU install").
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-runtime}"
PY="${PYTHON:-python3}"
if [ "${ARENA_TORCH:-cpu}" = "cpu" ]; then
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
case "$extras" in
  runtime) spec=".[eval,rl,dashboard]" ;;
  dev) spec=".[dev]" ;;
  *) spec=".[$extras]" ;;
esac
"$PY" -m pip install --quiet -e "$spec"
echo "arena installed ($spec)"
