#!/usr/bin/env bash
# The CUDA path in under 8 minutes on one GPU: every family trains a few hundred steps on CUDA at the GPU
# profile's sizes, exports, and ONNX Runtime's CUDA provider must reproduce torch. Writes
# benchmarks/gpu_check.json (throughput and parity per family), then serves the registered diffusion champion over
# REST on the GPU (benchmarks/serving_gpu.json). Needs the project installed with a CUDA
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
"$PY" benchmarks/gpu_check.py "$@"
# The champion served over REST on the GPU: `mlflow models serve` from this environment (the GPU machine reaches no
# package index, so MLflow cannot build the version's own), ONNX Runtime's CUDA provider with I/O binding in the
# sampler loop; request latency and requests/s at 1 and 4 clients -> benchmarks/serving_gpu.json.
PATH="$(dirname "$PY"):$PATH" "$PY" benchmarks/serving.py --env-manager local --requirements cuda --workers 1 \
    --n 64 --requests 16 --out benchmarks/serving_gpu.json
