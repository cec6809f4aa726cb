#!/usr/bin/env bash
# Installs keras-vit with its test extras into .venv and runs the test suite once
# per Keras backend. torch is pinned to the CPU build that every machine carries.
# Backend-specific tests run in every leg; tests marked backend_agnostic run once,
# in the torch leg (tests/conftest.py). Each leg prints its 25 slowest tests.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[test,jax]"
echo "=== install: $(( $(date +%s) - start )) s"
export TF_CPP_MIN_LOG_LEVEL=3
status=0
for backend in tensorflow jax torch; do
  echo "=== KERAS_BACKEND=$backend ==="
  leg=$(date +%s)
  KERAS_BACKEND=$backend .venv/bin/python -m pytest tests -n 2 -q -p no:cacheprovider --durations=25 "$@" || status=$?
  echo "=== KERAS_BACKEND=$backend: $(( $(date +%s) - leg )) s"
done
echo "=== total: $(( $(date +%s) - start )) s"
exit $status
