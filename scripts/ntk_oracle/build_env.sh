#!/usr/bin/env bash
# Builds the pinned oracle environment .venv-ntk-oracle/ for neural-tangents 0.6.5.
# neural-tangents 0.6.5 (its last release) imports only on jax <= 0.5.3, and its package import
# pulls in tensorflow via neural_tangents.experimental; compare.py registers an empty stand-in for
# that module, so tensorflow is never installed (~650 MB instead of ~2.7 GB).
# Usage: scripts/ntk_oracle/build_env.sh [VENV_DIR]   (idempotent: a stamp file skips rebuilds)
set -euo pipefail
VENV="${1:-.venv-ntk-oracle}"
PY="${PY:-python3}"
STAMP="$VENV/.oracle-stamp"
PINS=(
  "jax==0.5.3"
  "jaxlib==0.5.3"
  "numpy==2.2.4"
  "scipy==1.15.2"
  "ml_dtypes==0.5.1"
  "opt_einsum==3.4.0"
  "frozendict==2.4.6"
  "typing_extensions==4.13.2"
)
if [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "${PINS[*]} neural-tangents==0.6.5" ]]; then
  echo "oracle env $VENV is up to date"
  exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "${PINS[@]}"
"$VENV/bin/python" -m pip install -q --no-deps "neural-tangents==0.6.5"
echo "${PINS[*]} neural-tangents==0.6.5" > "$STAMP"
echo "built oracle env $VENV"
