#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, then
#   1. every test on the NumPy backend (kernel NVRTC/host/API checks included, CUDA 13 toolchain),
#   2. the kernel compile check again with the CUDA 12 toolchain (cupy-cuda12x, separate venv),
#   3. the backend-parametrized tests again through the CuPy backend on the CuPy test double.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest tests "$@"
bash scripts/check_kernels_cuda12.sh
GPUDL_BACKEND=cupy GPUDL_CUPY_DOUBLE=1 .venv/bin/python -m pytest -p tests.cupy_double.pytest_plugin tests "$@"
