"""Benchmark helpers: optional PyTorch for side-by-side numbers, and device synchronisation."""
import pytest

import gpudl
from gpudl import backend


def synchronize():
    """Wait for queued GPU work so a timed region covers it (no-op on the CPU)."""
    device = backend.default_device()
    backend.backend_for(device).synchronize(device)


def _torch_with_threads(count):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch) — no side-by-side")
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    yield torch
    torch.set_num_threads(threads)


@pytest.fixture
def torch_cpu():
    """PyTorch on the CPU with one thread, or skip when it is not installed."""
    yield from _torch_with_threads(1)


@pytest.fixture
def torch_2_threads():
    """PyTorch on the CPU with two threads, or skip when it is not installed."""
    yield from _torch_with_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    gpudl.manual_seed(0)
