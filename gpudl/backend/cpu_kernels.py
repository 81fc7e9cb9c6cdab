"""Which implementation runs the NumPy backend's fused ops: the compiled kernels or the twins.

``GPUDL_CPU_KERNELS`` chooses: ``native`` (every fused op from the kernels of ``kernels/*.cuh``
compiled by the host C++ compiler, ``fused_native``; an error if that is impossible), ``numpy``
(the pure-NumPy twins, ``fused_numpy``) or ``auto`` (the default: native when a probe library
builds and loads, except the ops whose twin measured faster, ``fused_native.TWIN_FASTER``; else
the twins, announced by one line on stderr). The choice is made once per process, when the
backend's fused ops are first asked for.

Threads: OpenMP reads ``OMP_NUM_THREADS`` (``gpudl bench --threads`` sets it) when the first
kernel library loads libgomp. While the compiled kernels are in use, NumPy's OpenBLAS runs on
these same threads (``blas`` and ``openblas_pool``: one pool, since OpenBLAS's own idle threads
busy-wait without yielding for ~0.1 s after each product and so hold the cores our threads need).
An idle libgomp thread spins for up to ``GOMP_SPINCOUNT`` iterations after each
parallel loop before it sleeps (libgomp's default when ``OMP_WAIT_POLICY`` is unset: 300,000, cut
to 100 when there are more OpenMP threads than CPUs). With one pool that is what keeps small products
and kernels fast: a sleeping thread takes 35-50 µs to wake here, longer than a [32, 512] x [512,
512] product, and nothing else of ours wants the core meanwhile (gpudl's bench MLP step at batch 32,
2 threads, two alternating runs: 1.40-1.45 ms so, 1.76-1.90 ms with sleeping threads). With two pools
(``GPUDL_BLAS_THREADS=own``) a spinning libgomp thread takes the core from the next OpenBLAS
product, so there, unless the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``, gpudl sets
``OMP_WAIT_POLICY=PASSIVE`` before loading libgomp and our threads sleep as soon as a loop ends. A process
forked after the kernels were loaded runs them on one thread: libgomp's pool does not survive
``fork()``.
"""
import ctypes
import os
import sys
from typing import NamedTuple

import numpy

from . import host_compiler
from .selection import BackendError, environment_choice

VALID_CHOICES = ("auto", "native", "numpy")
# What every kernel library needs: the float16 class (_Float16: GCC >= 12 on x86-64), OpenMP and
# the running interpreter's C API (arrays arrive as __array_struct__ capsules).
_PROBE = r"""
#include <omp.h>
extern "C" int gpudl_probe_threads(void* capsule) {
  const float x = *static_cast<const float*>(gpudl_host::array_data(capsule));
  float16 h = x;
  return (float)h == x ? omp_get_max_threads() : -1;
}
"""


class Status(NamedTuple):
    """The active path (``native`` or ``numpy``), why, and for native the OpenMP thread count."""
    path: str
    reason: str
    threads: int = 0


_status = None


def requested() -> str:
    """``GPUDL_CPU_KERNELS`` (default ``auto``), validated."""
    return environment_choice("GPUDL_CPU_KERNELS", "auto", VALID_CHOICES)


def configure_openmp():
    """With ``GPUDL_BLAS_THREADS=own`` (two thread pools), make libgomp's idle threads sleep instead of
    spin, unless the user chose a policy; with one shared pool keep libgomp's default (see the module
    docstring). Must run before the first kernel library loads libgomp."""
    from . import blas
    if (blas.requested_threads() == "own" and "OMP_WAIT_POLICY" not in os.environ
            and "GOMP_SPINCOUNT" not in os.environ):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def _probe():
    """Build and load the probe library; return the OpenMP thread count."""
    configure_openmp()
    lib = host_compiler.build(host_compiler.SHIM + host_compiler.PYTHON_ARRAYS + _PROBE,
                              name="probe")
    threads = ctypes.PyDLL(lib._name, handle=lib._handle).gpudl_probe_threads
    threads.argtypes = [ctypes.py_object]
    count = threads(numpy.array([1.5], numpy.float32).__array_struct__)
    if count < 1:
        raise host_compiler.HostCompileError("the compiler's _Float16 does not round-trip 1.5")
    return count


def status() -> Status:
    """The path the NumPy backend's fused ops take in this process (decided on first call).

    Raises BackendError for an invalid ``GPUDL_CPU_KERNELS`` or for ``native`` without a
    usable compiler.
    """
    global _status
    if _status is None:
        _status = _decide(requested())
    return _status


def _decide(choice):
    if choice == "numpy":
        return Status("numpy", "GPUDL_CPU_KERNELS=numpy")
    try:
        threads = _probe()
    except (host_compiler.CompilerUnavailable, host_compiler.HostCompileError) as exc:
        reason = str(exc).splitlines()[0]
        if choice == "native":
            raise BackendError(f"GPUDL_CPU_KERNELS=native, but the CPU kernels cannot be built: "
                               f"{reason}") from None
        print(f"gpudl: CPU fused ops use the NumPy twins ({reason})", file=sys.stderr)
        return Status("numpy", f"auto: no usable C++ compiler ({reason})")
    from . import fused_native
    fused_native.prefer_twins_where_faster(choice == "auto")
    path, version = host_compiler.compiler_identity(host_compiler.compiler())
    twins = (f"; {len(fused_native.TWIN_FASTER)} ops measured faster as NumPy twins run as twins"
             if choice == "auto" else "")
    return Status("native", f"GPUDL_CPU_KERNELS={choice}: {version} ({path}), "
                  f"cache {host_compiler.cache_dir() / 'cpu-kernels'}{twins}", threads)


def fused_module():
    """The module of fused ops for NumPy arrays: ``fused_native`` or ``fused_numpy``."""
    if status().path == "native":
        from . import fused_native
        return fused_native
    from . import fused_numpy
    return fused_numpy


def reset():
    """Forget the decision (tests change ``GPUDL_CPU_KERNELS`` or ``CXX`` and ask again)."""
    global _status
    _status = None
    host_compiler.compiler_identity.cache_clear()
