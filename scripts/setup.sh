#!/usr/bin/env bash
# Create .venv (if needed) and install gpudl into it, editable, with the test, plot and tune extras.
# Also installs the Fashion-MNIST data set from Debian/Ubuntu where apt is available. With --parity,
# also .venv-torch: gpudl (editable) with PyTorch CPU, pytest and hypothesis, for the parity tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,plot,tune,mpi]"
if [ "${1:-}" = "--parity" ]; then
    # PyTorch (CPU) for the side-by-side tests in a venv of its own: its wheels never touch .venv's CuPy
    # and NVRTC, which the kernel checks and the CuPy manifest pin
    if [ ! -x .venv-torch/bin/python ]; then
        python3 -m venv .venv-torch
    fi
    .venv-torch/bin/python -m pip install -q --upgrade pip
    .venv-torch/bin/python -m pip install -q -e ".[parity]"
fi
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${GPUDL_DATA:-}" ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
            || echo "setup: could not install dataset-fashion-mnist with apt-get; tests that need it will skip" >&2
    else
        echo "setup: Fashion-MNIST not found; install the Debian/Ubuntu package dataset-fashion-mnist," \
             "or put the four IDX files in a folder and set GPUDL_DATA to it" >&2
    fi
fi
