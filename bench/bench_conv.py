"""Convolution throughput: Conv2d forward+backward per layer shape, with PyTorch CPU side by side
when it is installed (``torch_cpu`` fixture). The CNN's whole training step per batch size is in
bench_training.py.

    .venv/bin/python -m pytest bench/bench_conv.py --benchmark-only

``extra_info["samples_per_s"]`` is batch size / median time; they also report
``gflops`` (forward + both backward products: 3 × 2 × multiply-adds). On a machine shared with
other jobs, multi-threaded BLAS timings swing wildly; ``OPENBLAS_NUM_THREADS=1`` gives stable
numbers to compare with the ``torch_cpu`` fixture (one thread).
"""
import pytest

import gpudl
from gpudl import nn
from conftest import synchronize

# (in_channels, out_channels, image size) of the CNN's two conv layers, 3x3 kernels, padding 1
CONV_LAYERS = {"conv1_1x28x28_to_32": (1, 32, 28), "conv2_32x14x14_to_64": (32, 64, 14)}


def _record(benchmark, batch, flops=None):
    if not benchmark.stats:  # None under --benchmark-disable
        return
    seconds = benchmark.stats.stats.median
    benchmark.extra_info["samples_per_s"] = batch / seconds
    if flops is not None:
        benchmark.extra_info["gflops"] = flops / seconds / 1e9


def _conv_flops(batch, cin, cout, size, needs_input_grad):
    multiply_adds = batch * size * size * cout * cin * 9
    return 2 * multiply_adds * (3 if needs_input_grad else 2)


@pytest.mark.parametrize("batch", (32, 128))
@pytest.mark.parametrize("layer", list(CONV_LAYERS))
def test_conv2d_forward_backward_gpudl(benchmark, layer, batch):
    cin, cout, size = CONV_LAYERS[layer]
    conv = nn.Conv2d(cin, cout, 3, padding=1)
    x = gpudl.randn(batch, cin, size, size, requires_grad=cin > 1)  # the first layer needs no input gradient

    with gpudl.no_grad():
        seed = conv(x) * 0 + 1  # in the output's memory layout, as a gradient from the next layer arrives

    def step():
        out = conv(x)
        out.backward(seed)
        synchronize()

    benchmark(step)
    _record(benchmark, batch, _conv_flops(batch, cin, cout, size, cin > 1))


@pytest.mark.parametrize("batch", (32, 128))
@pytest.mark.parametrize("layer", list(CONV_LAYERS))
def test_conv2d_forward_backward_torch(benchmark, torch_cpu, layer, batch):
    cin, cout, size = CONV_LAYERS[layer]
    conv = torch_cpu.nn.Conv2d(cin, cout, 3, padding=1)
    x = torch_cpu.randn(batch, cin, size, size, requires_grad=cin > 1)

    def step():
        out = conv(x)
        out.backward(torch_cpu.ones_like(out))

    benchmark(step)
    _record(benchmark, batch, _conv_flops(batch, cin, cout, size, cin > 1))
