#!/usr/bin/env bash
# The README's test command: install everything the tests need, then run them.
#   scripts/test.sh                # whole suite (unit tests + the small real-model budget)
#   scripts/test.sh -m "not slow"  # unit tests only (tiny random models; about a minute or two)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev
# The dashboard/report browser tests drive Debian's chromium through playwright (never
# `playwright install`); on a bare Debian machine (CI runs this script as root) install it once.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
  else
    echo "scripts/test.sh: chromium not found; the headless-browser tests will be skipped" >&2
  fi
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pytest "$@"
