#!/usr/bin/env bash
# Create .venv and install sslflow with its pinned dependencies (requirements.lock). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch/torchvision first: on Python 3.11 here they come from local disk; the lock pins the rest.
.venv/bin/python -m pip install --quiet -c requirements.lock torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install --quiet -c requirements.lock -e '.[test,bench]'
