#!/usr/bin/env bash
# Set up, then run every test, slow ones included (offline, CPU). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
python -m pytest -m "slow or not slow" "$@"
