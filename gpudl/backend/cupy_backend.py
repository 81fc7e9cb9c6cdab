"""The CuPy backend: arrays on CUDA GPUs."""
import functools

import cupy

from .device import Device


class CupyBackend:
    """Device arrays computed with CuPy; ops on ``cuda:N`` arrays run under ``cupy.cuda.Device(N)``."""

    name = "cupy"
    xp = cupy
    array_type = cupy.ndarray
    needs_device_context = True

    @functools.cached_property
    def fused(self):
        """The fused operations, as CuPy ElementwiseKernels built from ``kernels/``."""
        from . import fused_cupy
        return fused_cupy

    def device_of(self, array):
        """The device an array of this backend lives on."""
        return Device("cuda", array.device.id)

    def context(self, device):
        """Context in which new arrays are created and kernels launched on ``device``."""
        return cupy.cuda.Device(device.index)

    def from_host(self, array, device, copy: bool):
        """A host (NumPy) array copied onto ``device``."""
        with cupy.cuda.Device(device.index):
            return cupy.asarray(array)

    def to_host(self, array):
        """A device array copied to the host as a NumPy array (a host sync: pending device
        errors of this thread are raised here)."""
        host = array.get()
        self.fused.raise_pending_device_errors()
        return host

    def item(self, array):
        """The value of a one-element device array as a Python number (a host sync, as
        :meth:`to_host`)."""
        value = array.item()
        self.fused.raise_pending_device_errors()
        return value

    def synchronize(self, device=None):
        """Wait until all work queued on ``device`` (default: current) has finished; then raise
        this thread's pending device errors."""
        with cupy.cuda.Device(device.index if device is not None else cupy.cuda.Device().id):
            cupy.cuda.Device().synchronize()
        self.fused.raise_pending_device_errors()

    def version(self) -> str:
        """Version string of the array library."""
        return cupy.__version__

    def device_count(self) -> int:
        """The number of GPUs this process sees."""
        return cupy.cuda.runtime.getDeviceCount()

    def describe_device(self, device) -> str:
        """Human-readable name of ``device``."""
        props = cupy.cuda.runtime.getDeviceProperties(device.index)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
