#!/usr/bin/env bash
# GPU engine check, one run: PyTorch CUDA (fp32, fp16), ONNX Runtime CUDA EP (and CPU), TensorRT
# when importable; parity against CPU PyTorch; JSON + log in $OUT (default ./out/gpu).
#
#   OUT=/some/dir scripts/gpu_check.sh        # from the repository root; nothing to install
#
# Needs on the GPU machine: PyTorch (CUDA build), onnxruntime-gpu, OpenCV, numpy, PyYAML,
# safetensors (protobuf too for the fusion-step timing). Never imports pyzmq; TensorRT optional.
# Hard limit 7 minutes (the script budgets its sections to finish in about 6).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && .venv/bin/python -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  PY=.venv/bin/python
fi
echo "gpu_check: $($PY --version 2>&1), OUT=$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt" || true
timeout --kill-after=10 420 "$PY" -u scripts/gpu_check.py --out "$OUT" --budget-s 360 "$@" 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 124 ] && echo "gpu_check: hit the 7-minute limit; partial results only (the JSON is written at the end)" | tee -a "$OUT/gpu_check.log"
exit "$rc"
