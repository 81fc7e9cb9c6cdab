"""Throughput of a full training step (forward, loss, backward, SGD with momentum) of the MLP, CNN
and LSTM models per batch size, on the active backend (GPUDL_BACKEND), with the PyTorch twin
beside it when PyTorch is installed. The steps come from gpudl.benchmark, which ``gpudl bench``
also uses.

    .venv/bin/python -m pytest bench/bench_training.py --benchmark-only --benchmark-columns=median,iqr,rounds
    GPUDL_BENCH_BATCH_SIZES=all .venv/bin/python -m pytest bench/bench_training.py --benchmark-only -k mlp

Batch sizes: ``GPUDL_BENCH_BATCH_SIZES`` is ``all`` (1, 2, 4, ..., 1024) or a comma-separated list;
the default is a quick subset (1, 32, 128, 512). ``extra_info["samples_per_s"]`` is batch size /
median step time. Each timed step ends with a device synchronisation; warm-up steps (kernel
compilation, first allocation of reused buffers) run before timing. PyTorch gets as many threads
as NumPy's BLAS (``OPENBLAS_NUM_THREADS``, else all usable CPUs); set it, e.g. to 2, for a fair
side by side.
"""
import os

import pytest

from gpudl import benchmark as library

ALL_BATCH_SIZES = tuple(2 ** k for k in range(11))
QUICK_BATCH_SIZES = (1, 32, 128, 512)
WARMUP_STEPS = 3


def _batch_sizes():
    text = os.environ.get("GPUDL_BENCH_BATCH_SIZES", "").strip()
    if not text:
        return QUICK_BATCH_SIZES
    if text == "all":
        return ALL_BATCH_SIZES
    return tuple(int(part) for part in text.split(","))


def _threads():
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(name):
            return int(os.environ[name])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _run(benchmark_fixture, step, batch):
    for _ in range(WARMUP_STEPS):
        step()
    benchmark_fixture(step)  # step() synchronises the device at its end
    if benchmark_fixture.stats:  # None under --benchmark-disable
        benchmark_fixture.extra_info["samples_per_s"] = batch / benchmark_fixture.stats["median"]


@pytest.mark.parametrize("batch", _batch_sizes())
@pytest.mark.parametrize("model", library.MODELS)
def test_training_step_gpudl(benchmark, model, batch):
    _run(benchmark, library.make_step(model, batch), batch)


@pytest.fixture
def torch_twin():
    """gpudl.benchmark_torch with PyTorch at NumPy's BLAS thread count, or skip without PyTorch."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch): no side-by-side")
    from gpudl import benchmark_torch
    threads = torch.get_num_threads()
    torch.set_num_threads(_threads())
    yield benchmark_torch
    torch.set_num_threads(threads)


@pytest.mark.parametrize("batch", _batch_sizes())
@pytest.mark.parametrize("model", library.MODELS)
def test_training_step_torch(benchmark, torch_twin, model, batch):
    _run(benchmark, torch_twin.make_step(model, batch), batch)
