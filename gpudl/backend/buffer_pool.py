"""The one pool of scratch arrays: im2col columns, padded inputs, recurrent sequence buffers,
optimizer temporaries.

A training step needs the same large temporaries every time, and fresh multi-MB arrays cost
page faults on each step (DESIGN.md §5). An op takes an array out of the pool (it is then its own:
no other caller, in any thread, can get it until it is given back), and gives it back when done;
one never given back (its graph was dropped without a backward) is simply garbage-collected.

The pool is bounded in bytes per device: giving back beyond the limit drops the least recently
used arrays. The default limit is a sixteenth of the device's memory (host RAM, capped at 1 GiB,
or GPU memory); ``GPUDL_BUFFER_POOL_BYTES`` or :meth:`BufferPool.set_limit` sets it. Counters
(hits, misses, bytes held, arrays dropped) show in ``gpudl.profile()``'s table.
"""
import os
import threading
from collections import OrderedDict

import numpy

from .device import CPU

_HOST_CAP = 1 << 30
_MINIMUM = 64 << 20


def _device_memory(xp, device):
    """Total memory of ``device`` in bytes (host RAM for the CPU)."""
    if device == CPU:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return xp.cuda.Device(device.index).mem_info[1]


def default_limit(xp, device) -> int:
    """The pool's byte limit for ``device`` unless set: ``GPUDL_BUFFER_POOL_BYTES``, else a
    sixteenth of its memory (at least 64 MiB; on the host at most 1 GiB)."""
    configured = os.environ.get("GPUDL_BUFFER_POOL_BYTES")
    if configured is not None:
        try:
            value = int(configured)
        except ValueError:
            value = -1
        if value < 0:
            raise ValueError(f"GPUDL_BUFFER_POOL_BYTES must be a non-negative integer (bytes), got {configured!r}")
        return value
    share = _device_memory(xp, device) // 16
    return max(_MINIMUM, min(share, _HOST_CAP) if device == CPU else share)


class BufferPool:
    """Arrays free for reuse, keyed by device, shape and dtype; thread-safe (one lock around the
    bookkeeping, never around array work)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._free = OrderedDict()  # (device, shape, dtype) -> [arrays]; least recently used first
        self._held = {}             # device -> bytes held in free arrays
        self._limits = {}           # device -> byte limit, decided at the device's first take
        self._fixed_limit = None    # from set_limit(bytes) for every device
        self.hits = self.misses = self.dropped = 0

    def take(self, xp, device, shape, dtype):
        """An array of ``shape`` and ``dtype`` on ``device`` (arbitrary contents), the caller's alone
        until it gives it back. ``xp`` allocates it when the pool has none (inside the caller's device
        context)."""
        if device not in self._limits:
            limit = self._fixed_limit if self._fixed_limit is not None else default_limit(xp, device)
            with self._lock:
                self._limits.setdefault(device, limit)
        dtype = numpy.dtype(dtype)
        key = (device, tuple(shape), dtype)
        with self._lock:
            arrays = self._free.get(key)
            if arrays:
                array = arrays.pop()
                if arrays:
                    self._free.move_to_end(key)
                else:
                    del self._free[key]
                self._held[device] -= array.nbytes
                self.hits += 1
                return array
            self.misses += 1
        return xp.empty(key[1], dtype)

    def give(self, device, *arrays):
        """Return arrays from :meth:`take` (the caller must not touch them afterwards)."""
        with self._lock:
            limit = self._limits.get(device, 0)  # no take on this device since set_limit(None): keep none
            held = self._held.get(device, 0)
            for array in arrays:
                if array.nbytes > limit:
                    self.dropped += 1
                    continue
                key = (device, array.shape, array.dtype)
                self._free.setdefault(key, []).append(array)
                self._free.move_to_end(key)
                held += array.nbytes
            self._held[device] = self._shrink(device, held, limit)

    def _shrink(self, device, held, limit):
        """Drop the least recently used free arrays of ``device`` until ``held`` bytes fit ``limit``."""
        while held > limit:
            key = next(k for k in self._free if k[0] == device)
            arrays = self._free[key]
            held -= arrays.pop(0).nbytes
            if not arrays:
                del self._free[key]
            self.dropped += 1
        return held

    def set_limit(self, limit_bytes, device=None):
        """Bound the bytes held per device (every device, or ``device`` only); ``None`` restores the
        default, decided again at the next take. Free arrays beyond a lower limit are dropped now."""
        if limit_bytes is not None and (isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int)
                                        or limit_bytes < 0):
            raise ValueError(f"BufferPool.set_limit: expected a non-negative number of bytes or None, "
                             f"got {limit_bytes!r}")
        with self._lock:
            if device is None:
                self._fixed_limit = limit_bytes
            for d in set(self._held) | set(self._limits) if device is None else [device]:
                self._limits.pop(d, None)
                if limit_bytes is not None:
                    self._limits[d] = limit_bytes
                    self._held[d] = self._shrink(d, self._held.get(d, 0), limit_bytes)

    def clear(self):
        """Drop every free array (the counters keep counting)."""
        with self._lock:
            self.dropped += sum(len(arrays) for arrays in self._free.values())
            self._free.clear()
            self._held = {device: 0 for device in self._held}

    def limit(self, device=CPU):
        """The byte limit in force for ``device`` (None until its first ``take`` decides the default)."""
        return self._limits.get(device, self._fixed_limit)

    def stats(self) -> dict:
        """``hits``, ``misses``, ``dropped`` (arrays let go to stay under the limit, or too large) and
        ``held_bytes`` (free arrays kept now, all devices)."""
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "dropped": self.dropped,
                    "held_bytes": sum(self._held.values())}


POOL = BufferPool()
