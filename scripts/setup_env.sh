#!/usr/bin/env bash
# Sets up .venv for nncf-jax on a fresh machine: Python 3.12 (the version in
# .python-version when pyenv provides it), then the package in editable mode
# with the extras given as $1 (default: examples,test). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-examples,test}"
if [ ! -x .venv/bin/python ]; then
  python_bin=""
  for candidate in python3.12 python python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      python_bin="$candidate"
      break
    fi
  done
  if [ -z "$python_bin" ]; then
    echo "nncf-jax needs Python >= 3.11 (3.12 recommended); none found on PATH" >&2
    exit 1
  fi
  "$python_bin" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[$extras]"
