"""Throughput of the fused ops on the NumPy backend (pytest-benchmark; not part of the tests).

    .venv/bin/python -m pytest bench/bench_kernels.py --benchmark-only
"""
import numpy as np
import pytest

from gpudl.backend import fused_numpy as fn
from gpudl.backend.kernel_specs import ACTIVATIONS

N = 1 << 20


def _record(benchmark, elements):
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["elements_per_s"] = elements / benchmark.stats["mean"]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_forward(benchmark, name):
    x = np.random.default_rng(0).standard_normal(N).astype(np.float32)
    benchmark(fn.activation_forward, name, x)
    _record(benchmark, N)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_backward(benchmark, name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(N).astype(np.float32)
    y = fn.activation_forward(name, x)
    gy = rng.standard_normal(N).astype(np.float32)
    benchmark(fn.activation_backward, name, x, y, gy)
    _record(benchmark, N)


@pytest.fixture
def logits_targets():
    rng = np.random.default_rng(0)
    return rng.standard_normal((512, 10)).astype(np.float32), rng.integers(0, 10, 512)


def test_softmax_cross_entropy_forward(benchmark, logits_targets):
    logits, t = logits_targets
    benchmark(fn.softmax_cross_entropy_forward, logits, t, -100, 0.0)
    _record(benchmark, logits.size)


def test_softmax_cross_entropy_backward(benchmark, logits_targets):
    logits, t = logits_targets
    _, lse = fn.softmax_cross_entropy_forward(logits, t, -100, 0.0)
    gl = np.full(512, 1 / 512, np.float32)
    benchmark(fn.softmax_cross_entropy_backward, logits, lse, t, gl, -100, 0.0)
    _record(benchmark, logits.size)


def test_dropout_forward(benchmark):
    x = np.random.default_rng(0).standard_normal(N).astype(np.float32)
    benchmark(fn.dropout_forward, x, 0.5, 1, 2)
    _record(benchmark, N)


def test_adam_update(benchmark):
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(N).astype(np.float32), rng.standard_normal(N).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    benchmark(lambda: fn.adam_update(p, g, m, v, step=1, lr=1e-3))
    _record(benchmark, N)
