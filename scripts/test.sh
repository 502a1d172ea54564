#!/usr/bin/env bash
# The README's test command: install everything the tests need, then run them.
#   scripts/test.sh                # whole suite (unit tests + the small real-model budget)
#   scripts/test.sh -m "not slow"  # unit tests only (tiny random models; about a minute or two)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pytest "$@"
