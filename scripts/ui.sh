#!/usr/bin/env bash
# The MLflow UI on http://127.0.0.1:5000 against the project's store (sslflow.tracking.tracking_uri: the
# project's mlflow.db, or MLFLOW_TRACKING_URI). Extra arguments go to `mlflow ui`, e.g. --port 5001.
# With MLFLOW_TRACKING_URI set to a tracking server (http...), it prints the link to the runs there instead.
# First it prints the link to the experiment's training runs: MLflow 3 opens an experiment on its GenAI overview.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
source .venv/bin/activate  # `mlflow ui` starts `uvicorn` from PATH
store=$(python -c 'from sslflow.tracking import tracking_uri; print(tracking_uri())')
experiment=$(python -c '
from sslflow import config
from sslflow.paths import Layout
print(config.load(Layout().params, "base", config.Base).experiment)
')
runs_page() { python -c 'import sys; from sslflow.tracking import runs_page; print(runs_page(*sys.argv[1:]))' "$@"; }
case "$store" in
  http://* | https://*)  # a tracking server (the team's: scripts/team_server.sh) serves its own UI
    echo "MLflow UI, the experiment's training runs on the tracking server: $(runs_page "${store%/}" "$experiment")"
    echo "(it asks for your MLflow username and password; nothing is started here)"
    exit 0 ;;
esac
port=5000
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --port | -p) port=${args[i + 1]:-$port} ;;
    --port=*) port=${args[i]#--port=} ;;
  esac
done
echo "MLflow UI, the experiment's training runs: $(runs_page "http://127.0.0.1:$port" "$experiment")"
# The server's job runner (a pool of huey workers for GenAI features) is not needed to compare runs.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
# Loopback only: the UI has no authentication and can change the registry's aliases.
exec mlflow ui --backend-store-uri "$store" --host 127.0.0.1 --port 5000 --workers 1 "$@"
