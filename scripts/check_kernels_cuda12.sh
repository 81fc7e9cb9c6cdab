#!/usr/bin/env bash
# Run the NVRTC kernel compile check (every listed launch signature for sm_75, sm_80 and sm_90)
# against CUDA 12 (cupy-cuda12x + NVRTC 12 + CUDA 12 headers), in its own venv .venv-cuda12
# (created on first use). No GPU needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-cuda12/bin/python ]; then
  "$PY" -m venv .venv-cuda12
  .venv-cuda12/bin/python -m pip install -q --upgrade pip
  .venv-cuda12/bin/python -m pip install -q "cupy-cuda12x>=14.2,<15" "nvidia-cuda-nvrtc-cu12" \
    "nvidia-cuda-runtime-cu12" numpy pytest
fi
PYTHONPATH=. exec .venv-cuda12/bin/python -m pytest -p no:cacheprovider \
  tests/kernels/test_kernels_compile.py "$@"
