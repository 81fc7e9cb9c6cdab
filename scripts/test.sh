#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, then
#   1. every test on the NumPy backend (kernel NVRTC/host/API checks included, CUDA 13 toolchain),
#      then the fused-op tests again on the NumPy twins and with every CPU op compiled,
#   2. the kernel compile check again with the CUDA 12 toolchain (cupy-cuda12x, separate venv),
#   3. the backend-parametrized tests again through the CuPy backend on the CuPy test double,
#   4. the PyTorch side-by-side tests in .venv-torch (PyTorch CPU, apart from .venv's CuPy),
#   5. the soak test (memory over thousands of steps) on NumPy and on the CuPy double.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --parity
echo "== pass 1/6: every test on the NumPy backend (skips: the device=cuda cases without a GPU, run in pass 4 on the CuPy double; tests needing PyTorch or Fashion-MNIST where absent)"
.venv/bin/python -m pytest tests "$@"
echo "== pass 2/6: the fused-op tests on the NumPy twins (GPUDL_CPU_KERNELS=numpy) and with every CPU op compiled (native); test_blas.py with the gpudl[mkl] extra in .venv-mkl"
GPUDL_CPU_KERNELS=numpy .venv/bin/python -m pytest tests/test_ops_gradcheck.py tests/test_rnn.py tests/test_optim.py tests/test_nn_loss.py tests/test_nn_layers.py "$@"
GPUDL_CPU_KERNELS=native .venv/bin/python -m pytest tests/test_ops_gradcheck.py tests/test_rnn.py tests/test_nn_loss.py "$@"
# the GEMM provider's MKL tests with gpudl[mkl] (Intel's mkl wheel, ~1 GB) in a venv of its own
[ -x .venv-mkl/bin/python ] || python3 -m venv .venv-mkl
.venv-mkl/bin/python -m pip install -q -e ".[mkl]" pytest
.venv-mkl/bin/python -m pytest tests/test_blas.py "$@"
echo "== pass 3/6: NVRTC compile of every kernel with the CUDA 12 toolchain (no GPU needed, nothing skips)"
bash scripts/check_kernels_cuda12.sh
echo "== pass 4/6: the tests through the CuPy backend on the CPU test double (skips: files that need the real CuPy, run in passes 1-3)"
GPUDL_BACKEND=cupy GPUDL_CUPY_DOUBLE=1 .venv/bin/python -m pytest -p tests.cupy_double.pytest_plugin tests "$@"
echo "== pass 5/6: the tests that compare with PyTorch, in .venv-torch (GPUDL_TORCH_PARITY=1 selects them: the tests whose code uses torch)"
.venv-torch/bin/python -c "import torch; print('PyTorch', torch.__version__)"
GPUDL_TORCH_PARITY=1 .venv-torch/bin/python -m pytest tests "$@"
echo "== pass 6/6: the soak test (GPUDL_SOAK=1): memory growth over 10,000 MLP and 1,000 CNN and LSTM steps, NumPy and CuPy double"
GPUDL_SOAK=1 GPUDL_BACKEND=cupy GPUDL_CUPY_DOUBLE=1 .venv/bin/python -m pytest -p tests.cupy_double.pytest_plugin tests/test_soak.py -rP
