#!/usr/bin/env bash
# Set up, then run the test suite (offline, CPU). Extra arguments go to pytest, e.g. -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
python -m pytest "$@"
