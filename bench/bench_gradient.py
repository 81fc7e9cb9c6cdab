"""Numerical gradient vs backprop: the classic demonstration that backprop is orders of magnitude faster.

On a small MLP (2-32-32-3, 1,251 parameters, batch 64) both are timed in full (compare the two
medians); ``extra_info`` records the parameter count. For the 670k-
parameter Fashion-MNIST MLP a full numerical gradient would take many minutes, so
``test_numerical_gradient_sampled_mlp784`` times k sampled coordinates and extrapolates.
Run: ``.venv/bin/python -m pytest bench/bench_gradient.py --benchmark-only``.
"""
import pytest

import gpudl
from gpudl import models, nn
from gpudl.data import spiral

from conftest import synchronize


def _loss(model, x, t):
    return nn.functional.softmax_cross_entropy(model(x), t)


def _numerical_gradient(model, x, t, coordinates=None, eps=1e-3):
    """Central differences of the loss over the given (parameter, flat index) coordinates (default: all)."""
    params = list(model.parameters())
    if coordinates is None:
        coordinates = [(p, j) for p in params for j in range(p.size)]
    grads = []
    with gpudl.no_grad():
        for p, j in coordinates:
            flat = p.data.reshape(-1)
            original = float(flat[j])
            flat[j] = original + eps
            plus = float(_loss(model, x, t).item())
            flat[j] = original - eps
            minus = float(_loss(model, x, t).item())
            flat[j] = original
            grads.append((plus - minus) / (2 * eps))
    return grads


@pytest.fixture
def small_problem():
    x, t = spiral(n_per_class=22, n_classes=3)
    model = models.MLP(in_features=2, hidden_sizes=(32, 32), num_classes=3)
    return model, gpudl.tensor(x[:64]), gpudl.tensor(t[:64])


def _backprop(model, x, t):
    model.zero_grad()
    _loss(model, x, t).backward()
    synchronize()


def test_backprop_small_mlp(benchmark, small_problem):
    model, x, t = small_problem
    benchmark(_backprop, model, x, t)
    benchmark.extra_info["parameters"] = sum(p.size for p in model.parameters())


def test_numerical_gradient_small_mlp(benchmark, small_problem):
    model, x, t = small_problem
    benchmark.pedantic(_numerical_gradient, args=(model, x, t), rounds=3, iterations=1)
    benchmark.extra_info["parameters"] = sum(p.size for p in model.parameters())
    benchmark.extra_info["forward_passes"] = 2 * benchmark.extra_info["parameters"]


@pytest.mark.parametrize("k", [64])
def test_numerical_gradient_sampled_mlp784(benchmark, k):
    model = models.MLP()
    x, t = gpudl.randn(128, 784), gpudl.randint(0, 10, 128)
    generator = gpudl.backend.new_generator(0)
    params = list(model.parameters())
    sizes = [p.size for p in params]
    total = sum(sizes)
    picks = generator.choice(total, size=k, replace=False)
    coordinates = []
    for flat in picks:
        for p, size in zip(params, sizes):
            if flat < size:
                coordinates.append((p, int(flat)))
                break
            flat -= size
    benchmark.pedantic(_numerical_gradient, args=(model, x, t, coordinates), rounds=3, iterations=1)
    per_coordinate = benchmark.stats.stats.median / k
    benchmark.extra_info["parameters"] = total
    benchmark.extra_info["extrapolated_full_seconds"] = per_coordinate * total


def test_backprop_mlp784(benchmark):
    model = models.MLP()
    x, t = gpudl.randn(128, 784), gpudl.randint(0, 10, 128)
    benchmark(_backprop, model, x, t)
    benchmark.extra_info["parameters"] = sum(p.size for p in model.parameters())
