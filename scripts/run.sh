#!/usr/bin/env bash
# Set up, then run every pipeline on the embedded data (offline): the image track (dvc.yaml) and the text track
# (text/dvc.yaml), check -> fetch -> ... -> promote, and show the metrics. Arguments replace --all-pipelines:
#   bash scripts/run.sh dvc.yaml         # the image pipeline only (what plain `dvc repro` runs)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
if [ "$#" -eq 0 ]; then set -- --all-pipelines; fi
dvc repro "$@"
dvc metrics show
