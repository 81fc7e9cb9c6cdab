"""The NumPy backend: arrays on the host."""
import contextlib
import functools

import numpy

from .device import CPU


class NumpyBackend:
    """Host arrays computed with NumPy."""

    name = "numpy"
    xp = numpy
    array_type = numpy.ndarray
    needs_device_context = False

    @functools.cached_property
    def fused(self):
        """The fused operations (activations, softmax-CE, dropout, optimizer updates, recurrent
        cells): the compiled kernels or their NumPy twins, as ``GPUDL_CPU_KERNELS`` chooses. The
        first call also makes the host allocator keep freed step memory (``host_memory``)."""
        from . import host_memory
        from .cpu_kernels import fused_module
        host_memory.configure()
        return fused_module()

    def device_of(self, array):
        """The device an array of this backend lives on."""
        return CPU

    def context(self, device):
        """Context in which new arrays are created on ``device`` (nothing to do on the host)."""
        return contextlib.nullcontext()

    def from_host(self, array, device, copy: bool):
        """A host (NumPy) array placed on ``device`` of this backend."""
        return array.copy() if copy else array

    def to_host(self, array):
        """This backend's array as a NumPy array (no copy on the host)."""
        return array

    def item(self, array):
        """The value of a one-element array as a Python number."""
        return array.item()

    def synchronize(self, device=None):
        """Wait for queued work on ``device`` (the host never queues)."""

    def version(self) -> str:
        """Version string of the array library."""
        return numpy.__version__

    def describe_device(self, device) -> str:
        """Human-readable name of ``device``."""
        return "host CPU (NumPy)"
