#!/usr/bin/env bash
# Installs keras-vit with its test extras into .venv and runs the test suite once
# per Keras backend. torch is pinned to the CPU build that every machine carries.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[test,jax]"
export TF_CPP_MIN_LOG_LEVEL=3
status=0
for backend in tensorflow jax torch; do
  echo "=== KERAS_BACKEND=$backend ==="
  KERAS_BACKEND=$backend .venv/bin/python -m pytest tests -n 2 -q -p no:cacheprovider "$@" || status=$?
done
exit $status
