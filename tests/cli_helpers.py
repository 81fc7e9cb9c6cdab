"""Helpers of the command-line tests: a small learnable stand-in for Fashion-MNIST, and running ``gpudl``."""
import os
import subprocess
import sys

import numpy as np

from conftest import subprocess_env
from gpudl.data import write_idx


def write_fake_fashion(folder, n_train=600, n_test=200):
    """Four IDX files of an easy 10-class problem in ``folder``: each class lights up its own band of rows."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        rows = 2 * labels[:, None] + np.arange(3)  # rows 2k, 2k+1, 2k+2 of class k
        images[np.arange(n)[:, None], rows] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def run_cli(*args, timeout=300, cwd=None):
    """``python -m gpudl.cli ARGS`` on the test's backend (``GPUDL_BACKEND``, else numpy), output captured."""
    env = subprocess_env(GPUDL_BACKEND=os.environ.get("GPUDL_BACKEND", "numpy"))
    return subprocess.run([sys.executable, "-m", "gpudl.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=cwd)


def last_line_accuracy(result):
    """The percentage on the last stdout line, which must read ``test accuracy: NN.NN%``."""
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy: ") and last.endswith("%"), result.stdout
    return float(last[len("test accuracy: "):-1])


def one_error_line(result):
    """The one line a failed command (exit code 1) wrote to stderr, which must start with ``gpudl: error: ``."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpudl: error: "), result.stderr
    return lines[0]
