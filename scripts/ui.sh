#!/usr/bin/env bash
# The MLflow UI on http://127.0.0.1:5000 against the project's store (sslflow.tracking.tracking_uri: the
# project's mlflow.db, or MLFLOW_TRACKING_URI). Extra arguments go to `mlflow ui`, e.g. --port 5001.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
source .venv/bin/activate  # `mlflow ui` starts `uvicorn` from PATH
store=$(python -c 'from sslflow.tracking import tracking_uri; print(tracking_uri())')
case "$store" in
  http://* | https://*)
    echo "error: MLFLOW_TRACKING_URI is a tracking server ($store): open it in a browser instead" >&2
    exit 2 ;;
esac
# The server's job runner (a pool of huey workers for GenAI features) is not needed to compare runs.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
# Loopback only: the UI has no authentication and can change the registry's aliases.
exec mlflow ui --backend-store-uri "$store" --host 127.0.0.1 --port 5000 --workers 1 "$@"
