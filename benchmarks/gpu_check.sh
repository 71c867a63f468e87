#!/usr/bin/env bash
# The CUDA path in under 8 minutes on one GPU: every family trains a few hundred steps on CUDA at the GPU
# profile's sizes, exports, and ONNX Runtime's CUDA provider must reproduce torch. Writes
# benchmarks/gpu_check.json (throughput and parity per family). Needs the project installed with a CUDA
# build of torch and onnxruntime-gpu (`make setup` on a GPU machine).
# Usage: bash benchmarks/gpu_check.sh [--steps N]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: torch sees no CUDA device here; nothing was measured" >&2
    exit 3
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PY" benchmarks/gpu_check.py "$@"
