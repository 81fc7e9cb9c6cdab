"""Per-op framework overhead and a large elementwise chain, side by side with PyTorch CPU.

Per-op overhead is the time of ``(a*b+c).sum().backward()`` on 10-element float32 tensors
divided by 3 (three ops), reported in ``extra_info["us_per_op"]``.
Run: ``.venv/bin/python -m pytest bench/bench_overhead.py --benchmark-only``.
"""
import gpudl

from conftest import synchronize


def _record(benchmark, ops):
    benchmark.extra_info["us_per_op"] = benchmark.stats.stats.median / ops * 1e6


def test_per_op_overhead_gpudl(benchmark):
    a, b, c = (gpudl.randn(10, requires_grad=True) for _ in range(3))

    def step():
        (a * b + c).sum().backward()
        synchronize()

    benchmark(step)
    _record(benchmark, 3)


def test_per_op_overhead_torch(benchmark, torch_cpu):
    a, b, c = (torch_cpu.randn(10, requires_grad=True) for _ in range(3))
    benchmark(lambda: (a * b + c).sum().backward())
    _record(benchmark, 3)


def _chain(x):
    return ((x * 1.5 + 0.5).exp() * x - x.sqrt()).sum()


def test_elementwise_chain_1e6_gpudl(benchmark):
    x = gpudl.rand(10 ** 6, requires_grad=True)

    def step():
        _chain(x).backward()
        synchronize()

    benchmark(step)
    benchmark.extra_info["elements_per_s"] = 10 ** 6 / benchmark.stats.stats.median


def test_elementwise_chain_1e6_torch(benchmark, torch_cpu):
    x = torch_cpu.rand(10 ** 6, requires_grad=True)
    benchmark(lambda: _chain(x).backward())
    benchmark.extra_info["elements_per_s"] = 10 ** 6 / benchmark.stats.stats.median
