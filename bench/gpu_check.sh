#!/usr/bin/env bash
# The GPU check of issue 21 on a bare GPU machine (torch with CUDA installed, no network):
# installs the carried wheels, points the tools at the carried tokenizer and clips, then runs
# bench/gpu_check.py (parity CPU fp32 vs CUDA fp32, bf16 vs fp32, the speed table), which writes
# bench/results/gpu-<host>-<time>.md/.json and copies them to $OUT when set.
#
#   bash bench/gpu_prepare.sh        # here, with network: fills .whl/ and .gpu/ (ignored by git)
#   # then, with the device tool: carry [".whl", ".gpu"], timeout_s 540, command:
#   bash bench/gpu_check.sh
#
# Designed to end within 8 minutes on one H100/H200 (building the 2 GB checkpoint is the longest
# step, ~1 min). Extra arguments go to gpu_check.py (e.g. --device cpu --quick for a dry run).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
# the checkout's packages (model, engine, tools): nothing is pip-installed on a bare GPU machine
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    if "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/gpu-check-site .whl/*.whl
        export PYTHONPATH="/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}"
    else  # a dry run elsewhere: that Python has its own packages
        echo "[gpu_check] .whl/ holds CPython 3.12 wheels: not installed for $("$PY" -V)"
    fi
fi
if [ -d .gpu/assets ]; then
    export FUNASR_NANO_ASSETS="$PWD/.gpu/assets"      # the npm tarball: the tokenizer, offline
fi
if [ -d .gpu/speech ]; then
    export SPEECH_DATA="$PWD/.gpu/speech"
fi
export FUNASR_NANO_MODELS="${FUNASR_NANO_MODELS:-/tmp/gpu-check-models}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader || true
exec "$PY" bench/gpu_check.py "$@"
