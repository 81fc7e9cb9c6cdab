"""What the tests of the host loops that issue their own BLAS products share (test_native_conv,
test_native_recurrence): the skip where those loops cannot run, and running code with a
backend's runner replaced by the twins' (the per-op or per-step form)."""
import numpy as np
import pytest

from gpudl.backend import blas, cpu_kernels, fused_native, fused_numpy


def native_or_skip():
    """Skip unless the compiled CPU kernels are in use and the BLAS runs on gpudl's threads."""
    if cpu_kernels.status().path != "native":
        pytest.skip(f"the compiled CPU kernels are not in use ({cpu_kernels.status().reason})")
    if blas.single_thread_gemm(np.float32) is None:
        pytest.skip(f"the BLAS keeps threads of its own: {blas.describe()}")


def without_runner(monkeypatch, name):
    """``run(function)``: ``function()`` with ``fused_native.<name>`` replaced by the twins' (None)."""
    def run(function):
        with monkeypatch.context() as patch:
            patch.setattr(fused_native, name, getattr(fused_numpy, name))
            return function()
    return run
