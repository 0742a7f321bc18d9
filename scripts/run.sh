#!/usr/bin/env bash
# Set up, then run the whole pipeline on the embedded data (offline): fetch -> ... -> evaluate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
dvc repro "$@"
dvc metrics show
