#!/usr/bin/env bash
# Serve a registered model over REST, as `mlflow models serve --env-manager local` does (POST /invocations,
# GET /ping), with a size limit on each request: over --max-rows rows (default 1000) or --max-bytes bytes of
# body (default 16 MiB) is answered 413 before the model runs. Defaults may also come from SSLFLOW_SERVE_MAX_ROWS
# and SSLFLOW_SERVE_MAX_BYTES. Against the project's store (sslflow.tracking.tracking_uri), on 127.0.0.1:5001:
#   bash scripts/serve.sh [-m models:/sslflow-image@champion] [-h 127.0.0.1] [-p 5001] [--max-rows N] [--max-bytes N]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
source .venv/bin/activate
exec python -m sslflow.tracking.serving "$@"
