#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py) on a bare CUDA machine, in one command:
#   bash scripts/gpu_check.sh [OUT_DIR] [more bench/gpu_check.py options]
# The wheels the machine lacks (built here by scripts/gpu_wheels.sh into .whl/) are installed first when .whl/
# holds any; sslflow itself runs from src/. Results: OUT_DIR, else $OUT, else bench/gpu_check.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/sslflow-site .whl/*.whl
  export PYTHONPATH="/tmp/sslflow-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out=${1:-${OUT:-bench/gpu_check}}
exec "$PY" bench/gpu_check.py --out "$out" "${@:2}"
