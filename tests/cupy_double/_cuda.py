"""Cheap stand-ins for ``cupy.cuda``: one device, synchronous streams, events on the wall clock,
a memory pool that counts live buffers and can be given a limit to simulate out-of-memory."""
import contextlib
import time
import weakref

from . import _counters
from ._manifest import no_stand_in

DEVICE_COUNT = 1
TOTAL_MEMORY = 80 * 1024 ** 3
_current = {"device": 0, "streams": []}
_ERRORS = {101: ("cudaErrorInvalidDevice", "invalid device ordinal")}


class CUDARuntimeError(RuntimeError):
    """``cupy.cuda.runtime.CUDARuntimeError``."""

    def __init__(self, status):
        self.status = status
        name, text = _ERRORS.get(status, ("cudaErrorUnknown", "unknown error"))
        super().__init__(f"{name}: {text}")


class OutOfMemoryError(MemoryError):
    """``cupy.cuda.memory.OutOfMemoryError``."""

    def __init__(self, size, total, limit=0):
        msg = f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes"
        msg += f", limit set to: {limit:,} bytes)." if limit else ")."
        super().__init__(msg)


def _check_device(device_id):
    if not 0 <= device_id < DEVICE_COUNT:
        raise CUDARuntimeError(101)


class Device:
    """``cupy.cuda.Device``: the current device is 0; ``Device(1).use()`` fails (one device)."""

    def __init__(self, device=None):
        self.id = _current["device"] if device is None else int(device)
        self._previous = []

    def use(self):
        """Make this the current device."""
        _check_device(self.id)
        _current["device"] = self.id

    def synchronize(self):
        """Nothing is asynchronous here (counted as a sync)."""
        _check_device(self.id)
        _counters.sync("cupy.cuda.Device.synchronize")

    def __enter__(self):
        _check_device(self.id)
        self._previous.append(_current["device"])
        _current["device"] = self.id
        return self

    def __exit__(self, *exc):
        _current["device"] = self._previous.pop()

    @property
    def compute_capability(self):
        """Always ``'90'`` (an H100)."""
        return "90"

    @property
    def mem_info(self):
        """``(free, total)`` bytes as the memory pool sees them."""
        return runtime_memGetInfo()

    def __int__(self):
        return self.id

    __index__ = __int__

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Event:
    """``cupy.cuda.Event``: records the wall clock."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.time = None

    def record(self, stream=None):
        """Record now."""
        self.time = time.perf_counter()

    def synchronize(self):
        """Nothing to wait for (counted as a sync)."""
        _counters.sync("cupy.cuda.Event.synchronize")

    done = property(lambda self: True)


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events."""
    return (end_event.time - start_event.time) * 1000.0


class Stream:
    """``cupy.cuda.Stream``: work runs at once, so streams only keep CuPy's API."""

    null = None

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self.ptr = 0 if null else id(self)
        self.is_non_blocking = non_blocking
        self.priority = priority or 0
        self.ptds = ptds

    def use(self):
        """Make this the current stream."""
        _current["streams"][-1:] = [self]
        return self

    def __enter__(self):
        _current["streams"].append(self)
        return self

    def __exit__(self, *exc):
        _current["streams"].pop()

    def synchronize(self):
        """Nothing to wait for (counted as a sync)."""
        _counters.sync("cupy.cuda.Stream.synchronize")

    def record(self, event=None):
        """Record ``event`` (a new one by default) on this stream."""
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event):
        """Nothing to wait for."""

    def launch_host_func(self, callback, arg):
        """Run ``callback(arg)`` now."""
        callback(arg)

    def add_callback(self, callback, arg):
        """Run ``callback(self, 0, arg)`` now."""
        callback(self, 0, arg)

    def is_capturing(self):
        """Never capturing."""
        return False

    def begin_capture(self, mode=None):
        """Refused: captured work would run eagerly here, so a replay would give stale results."""
        raise no_stand_in("cupy.cuda.Stream.begin_capture",
                          "CUDA graph capture is not emulated (work runs eagerly on the host, "
                          "so replaying a graph would silently reuse stale results)")

    end_capture = begin_capture
    done = property(lambda self: True)

    def __repr__(self):
        return f"<Stream {self.ptr} (device {_current['device']})>"


Stream.null = Stream(null=True)


def get_current_stream(device_id=-1):
    """The stream entered last (the null stream by default)."""
    return _current["streams"][-1] if _current["streams"] else Stream.null


class MemoryPool:
    """``cupy.cuda.MemoryPool``: counts live device buffers (rounded up to 512 bytes).

    Freed buffers stay cached until ``free_all_blocks()``; with ``set_limit`` an allocation that
    would pass the limit raises ``OutOfMemoryError`` (how tests simulate running out of memory).
    """

    def __init__(self, allocator=None):
        self._used = 0
        self._cached = 0
        self._limit = 0

    def track(self, host):
        """Account for the fresh device buffer ``host`` until it is garbage-collected."""
        size = -(-host.nbytes // 512) * 512
        if size == 0:
            return
        if self._limit and self._used + size > self._limit:
            raise OutOfMemoryError(size, self._used + self._cached, self._limit)
        self._cached -= min(self._cached, size)
        self._used += size
        weakref.finalize(host, self._release, size)

    def _release(self, size):
        self._used -= size
        self._cached += size

    def used_bytes(self):
        """Bytes held by live arrays."""
        return self._used

    def free_bytes(self):
        """Bytes cached for reuse."""
        return self._cached

    def total_bytes(self):
        """Used plus cached bytes."""
        return self._used + self._cached

    def n_free_blocks(self):
        """1 if anything is cached, else 0 (block counts are not modelled)."""
        return int(self._cached > 0)

    def free_all_blocks(self, stream=None):
        """Drop the cache."""
        self._cached = 0

    free_all_free = free_all_blocks

    def set_limit(self, size=None, fraction=None):
        """Limit the pool to ``size`` bytes or ``fraction`` of the device memory (0/None: none)."""
        if size is not None and fraction is not None:
            raise ValueError("size and fraction cannot be specified at one time")
        self._limit = int(fraction * TOTAL_MEMORY) if fraction is not None else int(size or 0)

    def get_limit(self):
        """The limit in bytes (0: none)."""
        return self._limit

    def malloc(self, size):
        """No stand-in (raw device pointers)."""
        raise no_stand_in("cupy.cuda.MemoryPool.malloc")


class PinnedMemoryPool:
    """``cupy.cuda.PinnedMemoryPool``: pinned memory is host memory; nothing to count."""

    def __init__(self, allocator=None):
        pass

    def free_all_blocks(self):
        """Nothing cached."""

    def n_free_blocks(self):
        """Always 0."""
        return 0

    def malloc(self, size):
        """No stand-in."""
        raise no_stand_in("cupy.cuda.PinnedMemoryPool.malloc")


DEFAULT_POOL = MemoryPool()
DEFAULT_PINNED_POOL = PinnedMemoryPool()


# ---------------------------------------------------------------- cupy.cuda.runtime
def runtime_getDeviceCount():
    """Number of devices (1)."""
    return DEVICE_COUNT


def runtime_getDevice():
    """The current device id."""
    return _current["device"]


def runtime_setDevice(device):
    """Make ``device`` current."""
    Device(device).use()


def runtime_deviceSynchronize():
    """Nothing to wait for (counted as a sync)."""
    _counters.sync("cupy.cuda.runtime.deviceSynchronize")


def runtime_memGetInfo():
    """``(free, total)`` bytes."""
    total = DEFAULT_POOL.get_limit() or TOTAL_MEMORY
    return total - DEFAULT_POOL.total_bytes(), total


def runtime_getDeviceProperties(device):
    """A plausible property dict for an H100 (the name says it is the double)."""
    _check_device(device)
    return {"name": b"cupy_double (CPU stand-in for an NVIDIA H100)", "totalGlobalMem": TOTAL_MEMORY,
            "major": 9, "minor": 0, "multiProcessorCount": 132, "warpSize": 32,
            "maxThreadsPerBlock": 1024, "sharedMemPerBlock": 49152, "clockRate": 1755000,
            "memoryClockRate": 2619000, "l2CacheSize": 52428800, "pciBusID": 0, "pciDeviceID": 0}


def runtime_runtimeGetVersion():
    """CUDA 13.0."""
    return 13000


runtime_driverGetVersion = runtime_runtimeGetVersion


def nvtx_noop(*args, **kwargs):
    """NVTX ranges and marks do nothing here."""


@contextlib.contextmanager
def time_range(message=None, color_id=None, argb_color=None, sync=False):
    """``cupyx.profiler.time_range``: a no-op context manager (and decorator)."""
    yield
