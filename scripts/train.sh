#!/usr/bin/env bash
# Set up (venv, gpudl, Fashion-MNIST) and train a model for real; default: the MLP for 3 epochs.
# Any arguments replace the default ones: bash scripts/train.sh cnn --epochs 3
# Each run writes a new folder runs/<model>/N, so running it again keeps the earlier runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$#" -eq 0 ]; then
    set -- mlp --epochs 3
fi
exec .venv/bin/gpudl train "$@"
