"""Collectives over NCCL (``cupy.cuda.nccl``) on device arrays, bootstrapped over MPI.

As ChainerMN's NCCL communicator: every rank takes the GPU of its rank within its node, rank 0
creates NCCL's unique id, MPI broadcasts it (as a 128-byte buffer), and each rank joins the NCCL
communicator with it. Device arrays are reduced by NCCL on the current stream, so a collective is
queued like a kernel and needs no wait on the host; host arrays (and barriers) go over MPI.
NCCL never gives up on a peer, so a watchdog thread aborts the job when a queued collective has not
finished within the timeout (a rank that died or hangs).
"""
import collections
import threading
import time

import cupy
import numpy
from cupy.cuda import nccl

from .mpi_comm import MpiCommunicator, Request
from .selection import BackendError

_DTYPES = {numpy.dtype(numpy.float16): nccl.NCCL_FLOAT16, numpy.dtype(numpy.float32): nccl.NCCL_FLOAT32,
           numpy.dtype(numpy.float64): nccl.NCCL_FLOAT64, numpy.dtype(numpy.int8): nccl.NCCL_INT8,
           numpy.dtype(numpy.uint8): nccl.NCCL_UINT8, numpy.dtype(numpy.int32): nccl.NCCL_INT32,
           numpy.dtype(numpy.int64): nccl.NCCL_INT64} if nccl.available else {}
_OPS = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN} if nccl.available else {}


def _check_nccl():
    if not nccl.available:
        raise BackendError("the NCCL backend needs the NCCL library, which CuPy cannot load: install it with "
                           "pip install nvidia-nccl-cu12 (CUDA 12) or nvidia-nccl-cu13 (CUDA 13), or use "
                           "init_process_group(backend='mpi')")


class _Watchdog:
    """Ends the job (``abort(reason)``) when a collective is not done ``timeout`` seconds after it was
    queued; a collective counts as done when the CUDA event recorded after it has completed."""

    def __init__(self, timeout, abort):
        self.timeout, self.abort = timeout, abort
        self.pending = collections.deque()  # [deadline, event or None while the call runs, what]
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        threading.Thread(target=self._watch, name="gpudl-nccl-watchdog", daemon=True).start()

    def start(self, what):
        """Note a collective about to be queued; returns its entry for :meth:`queued`."""
        entry = [time.monotonic() + self.timeout, None, what]
        with self.lock:
            self.pending.append(entry)
        return entry

    @staticmethod
    def queued(entry):
        """The collective of ``entry`` is on the current stream: watch it through an event."""
        event = cupy.cuda.Event(disable_timing=True)
        event.record()
        entry[1] = event

    def _watch(self):
        while not self.stopped.wait(0.1):
            with self.lock:
                while self.pending and self.pending[0][1] is not None and self.pending[0][1].done:
                    self.pending.popleft()
                late = self.pending[0] if self.pending and time.monotonic() > self.pending[0][0] else None
            if late is not None:
                self.abort(f"NCCL {late[2]} did not complete within {self.timeout:g} s: another rank died, hangs or "
                           "called a different collective")


class NcclCommunicator:
    """Collectives among all MPI ranks, device arrays over NCCL and host arrays over MPI.

    The GPU of a rank is its local rank modulo the number of visible GPUs (with one visible GPU per
    rank, as Slurm's ``--gpus-per-task`` arranges, every rank uses its device 0).
    """

    def __init__(self, timeout: float):
        _check_nccl()
        self.mpi = MpiCommunicator(timeout)
        self.rank, self.size = self.mpi.rank, self.mpi.size
        self.local_rank, self.local_size = self.mpi.local_rank, self.mpi.local_size
        self.device_index = self.local_rank % cupy.cuda.runtime.getDeviceCount()
        cupy.cuda.Device(self.device_index).use()
        uid = numpy.zeros(128, dtype=numpy.uint8)
        if self.rank == 0:
            uid[:] = numpy.frombuffer(nccl.get_unique_id(), dtype=numpy.uint8)
        self.mpi.broadcast(uid, 0)
        self.comm = nccl.NcclCommunicator(self.size, uid.tobytes(), self.rank)
        self.watchdog = _Watchdog(timeout, self.mpi.abort)

    @staticmethod
    def _on_device(array):
        return isinstance(array, cupy.ndarray)

    @staticmethod
    def _buffer(array):
        """(pointer, element count, NCCL dtype) of a C-contiguous device array."""
        if not array.flags.c_contiguous:
            raise ValueError(f"gpudl.distributed: collectives need C-contiguous arrays, got strides "
                             f"{array.strides} for shape {array.shape}")
        try:
            dtype = _DTYPES[array.dtype]
        except KeyError:
            raise TypeError(f"gpudl.distributed: NCCL has no type for dtype {array.dtype}") from None
        return array.data.ptr, array.size, dtype

    @staticmethod
    def _stream():
        return cupy.cuda.get_current_stream().ptr

    def start_all_reduce(self, array, op="sum"):
        """Queue an in-place reduction of ``array`` (a host array goes over MPI)."""
        if not self._on_device(array):
            return self.mpi.start_all_reduce(array, op)
        if op not in _OPS:
            raise ValueError(f"gpudl.distributed: unknown reduction op {op!r}; use one of {', '.join(_OPS)}")
        pointer, count, dtype = self._buffer(array)
        with cupy.cuda.Device(array.device.id):
            watched = self.watchdog.start(f"all_reduce of {count} {array.dtype} values")
            self.comm.allReduce(pointer, pointer, count, dtype, _OPS[op], self._stream())
            self.watchdog.queued(watched)
        return Request(self.mpi, None, "all_reduce")

    def all_reduce(self, array, op="sum"):
        """Reduce ``array`` in place over all ranks."""
        self.start_all_reduce(array, op).wait()

    def broadcast(self, array, src=0):
        """Overwrite ``array`` on every rank with rank ``src``'s."""
        if not self._on_device(array):
            return self.mpi.broadcast(array, src)
        pointer, count, dtype = self._buffer(array)
        with cupy.cuda.Device(array.device.id):
            watched = self.watchdog.start(f"broadcast from rank {src} of {count} {array.dtype} values")
            self.comm.bcast(pointer, count, dtype, src, self._stream())
            self.watchdog.queued(watched)

    def all_gather(self, array, out):
        """Fill ``out`` (shape ``(size, *array.shape)``) with every rank's ``array``."""
        if not self._on_device(array):
            return self.mpi.all_gather(array, out)
        pointer, count, dtype = self._buffer(array)
        out_pointer, _, _ = self._buffer(out)
        with cupy.cuda.Device(array.device.id):
            watched = self.watchdog.start(f"all_gather of {count} {array.dtype} values")
            self.comm.allGather(pointer, out_pointer, count, dtype, self._stream())
            self.watchdog.queued(watched)

    def barrier(self):
        """Wait until every rank (and its queued device work) has reached the barrier."""
        cupy.cuda.Device(self.device_index).synchronize()
        self.mpi.barrier()

    def abort(self, reason):
        """End every rank of the job (see :meth:`MpiCommunicator.abort`)."""
        self.mpi.abort(reason)

    def close(self):
        """Stop watching and release the NCCL communicator."""
        self.watchdog.stopped.set()
        self.comm.destroy()
