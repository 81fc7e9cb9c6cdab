"""What the double saw the code do on the "device", per thread.

- **Device operations**, a proxy for kernel launches: every ufunc call, reduction, matrix
  product, copy, fill, fancy-index gather or scatter, and custom-kernel launch counts one;
  views, ``empty`` and host-to-device copies count none (CuPy may split an op into more than one
  kernel, e.g. CUB reductions or cuBLAS, so the real number can be a little higher).
- **Device-to-host synchronisations**: every read of device data on the host (``get``,
  ``item``, ``float``/``int``/``bool`` of an array, printing one, ``asnumpy``), every
  ``synchronize()``, and CuPy functions whose result size depends on the data (``nonzero``,
  boolean-mask indexing...). Each records the innermost frame outside the double (``sync_sites``).
- **Custom-kernel launches** as the configuration CuPy would compile (:class:`Launch`): what the
  NVRTC check must have compiled.
"""
import collections
import sys
import threading
from pathlib import Path
from typing import NamedTuple

_HERE = str(Path(__file__).resolve().parent)


class Launch(NamedTuple):
    """One ``ElementwiseKernel``/``ReductionKernel`` launch as CuPy's code generator sees it.

    ``args``: per in and out parameter, ``("scalar", dtype)`` or ``("array", dtype, ndim,
    c_contiguous, index_32_bits)`` after CuPy's dimension merging (raw arrays unmerged);
    ``indexers``: the ndim of the launch's ``CIndexer`` (elementwise) or of the input and output
    indexers (reduction); ``idx32``: 32-bit indexing of the indexers.
    """
    kernel: str
    args: tuple
    indexers: tuple
    idx32: bool


class Counters:
    """Running totals of one thread (monotonic: take differences)."""

    def __init__(self):
        self.launches = 0
        self.syncs = 0
        self.sync_sites = []
        self.kernels = collections.Counter()  # Launch -> number of launches


_local = threading.local()


def counters():
    """This thread's :class:`Counters`."""
    state = getattr(_local, "counters", None)
    if state is None:
        state = _local.counters = Counters()
    return state


def launch(count=1):
    """Count ``count`` device operations."""
    counters().launches += count


def kernel_launch(record):
    """Count a custom-kernel launch and record its :class:`Launch`."""
    state = counters()
    state.launches += 1
    state.kernels[record] += 1


def _caller():
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_HERE):
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} ({frame.f_code.co_name})"


def sync(what):
    """Count a device-to-host synchronisation caused by ``what`` (recorded with its caller)."""
    state = counters()
    state.syncs += 1
    state.sync_sites.append(f"{what} at {_caller()}")
    del state.sync_sites[:-100]  # keep the latest, bounded
