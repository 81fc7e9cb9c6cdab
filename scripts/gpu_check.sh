#!/usr/bin/env bash
# The one-command GPU check. On a CUDA machine, with the CuPy (and PyTorch) already installed
# there and no network needed:
#   1. the whole test suite with GPUDL_BACKEND=cupy on the real device (pytest.log, pytest.xml),
#   2. gpudl bench {mlp,cnn,lstm} on the GPU, --compare torch when PyTorch sees CUDA
#      (bench_<model>.log, bench_<model>.json),
#   3. a one-screen summary (summary.txt): pass/fail counts, samples/s and gpudl/torch ratios.
# gpudl runs from this source tree (PYTHONPATH); nothing is installed or downloaded.
#
# Usage: scripts/gpu_check.sh [OUTDIR]          (default OUTDIR: gpu_check_<UTC time>)
# Exit status: 0 all passed, 1 a test or benchmark failed, 2 usage, 3 no usable CUDA GPU
# through CuPy, 4 a Python package the suite needs is missing.
# Environment: PYTHON (default python3), GPU_CHECK_TEST_TIMEOUT (s, default 210),
# GPU_CHECK_BENCH_TIMEOUT (s per model, default 45): together under 6 minutes.
set -uo pipefail
if [ $# -gt 1 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  echo "usage: scripts/gpu_check.sh [OUTDIR]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
OUT=${1:-gpu_check_$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || { echo "gpu_check: cannot create $OUT" >&2; exit 2; }
unset GPUDL_CUPY_DOUBLE  # the real CuPy, never the CPU test double
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" GPUDL_BACKEND=cupy
STARTED=$(date +%s)

# 1. a usable GPU through CuPy (a kernel launch and a read back)
if ! "$PY" - > "$OUT/gpu.txt" 2>&1 <<'EOF'
import cupy
name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
name = name.decode() if isinstance(name, bytes) else name
assert int((cupy.arange(4) * 2).sum()) == 12
print(f"{name} ({cupy.cuda.runtime.getDeviceCount()} GPU), CuPy {cupy.__version__}, "
      f"CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}")
EOF
then
  echo "gpu_check: no usable CUDA GPU through CuPy ($PY): $(tail -n 1 "$OUT/gpu.txt")" >&2
  echo "gpu_check: run it on a CUDA machine with CuPy installed (cupy-cuda12x or cupy-cuda13x); nothing was tested" >&2
  exit 3
fi
echo "gpu_check: $(cat "$OUT/gpu.txt"); writing $OUT"

# 2. what the suite needs, from this machine's Python (offline)
if ! "$PY" -c "import gpudl, numpy, pytest, hypothesis" > "$OUT/imports.txt" 2>&1; then
  echo "gpu_check: $(tail -n 1 "$OUT/imports.txt")" >&2
  echo "gpu_check: the suite needs numpy, tqdm, pytest and hypothesis in $PY (pip install --no-deps --no-build-isolation -e . installs gpudl itself)" >&2
  exit 4
fi

# 3. the whole suite on the device (interrupted at the limit: pytest still writes what it ran)
echo "gpu_check: test suite (GPUDL_BACKEND=cupy) ..."
timeout -s INT -k 20 "${GPU_CHECK_TEST_TIMEOUT:-210}" "$PY" -m pytest tests -q -p no:cacheprovider \
  --junitxml="$OUT/pytest.xml" > "$OUT/pytest.log" 2>&1
echo "tests $?" > "$OUT/status.txt"

# 4. throughput beside PyTorch when it sees the GPU
COMPARE=()
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" > /dev/null 2>&1; then
  COMPARE=(--compare torch)
fi
for model in mlp cnn lstm; do
  echo "gpu_check: gpudl bench $model ${COMPARE[*]} ..."
  timeout -s INT -k 10 "${GPU_CHECK_BENCH_TIMEOUT:-45}" "$PY" -m gpudl.cli bench "$model" --batch-sizes 32,256 \
    --passes 2 --steps 10 --warmup 3 --no-progress "${COMPARE[@]}" --json "$OUT/bench_$model.json" \
    > "$OUT/bench_$model.log" 2>&1
  echo "bench_$model $?" >> "$OUT/status.txt"
done
echo "seconds $(( $(date +%s) - STARTED ))" >> "$OUT/status.txt"

# 5. the summary
"$PY" "$ROOT/scripts/gpu_check_summary.py" "$OUT" | tee "$OUT/summary.txt"
exit "${PIPESTATUS[0]}"
