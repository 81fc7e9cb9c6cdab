"""Collectives over MPI (mpi4py) on array buffers: the transport of ``gpudl.distributed`` for host
arrays, and for device arrays through host copies when NCCL is not used.

Every collective moves the array's own buffer (mpi4py's upper-case, buffer-based methods: no
pickling) and is started non-blocking, then waited on with a deadline: a peer that died or hangs
makes this rank print why and abort the whole MPI job instead of waiting forever.
"""
import os
import sys
import time

import numpy

from .selection import BackendError

INSTALL_HINT = "pip install 'gpudl[mpi]'"
# environment variables set by MPI launchers (MPICH/Hydra, Open MPI, Slurm's srun) in every rank
LAUNCHER_RANK_VARIABLES = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID")
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS")


def launched_world_size() -> int:
    """The number of ranks an MPI launcher started this process among (1 when none did)."""
    for name in LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def import_mpi():
    """mpi4py's ``MPI`` module, or a BackendError naming the extra that installs it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise BackendError(f"distributed training over MPI needs mpi4py and an MPI library ({exc}): "
                           f"{INSTALL_HINT}") from None
    return MPI


class Request:
    """A started collective: ``wait()`` blocks until it is done (with the communicator's deadline)
    and then runs ``finish`` (copying a host staging buffer back to the device, say)."""

    __slots__ = ("comm", "request", "what", "finish")

    def __init__(self, comm, request, what, finish=None):
        self.comm, self.request, self.what, self.finish = comm, request, what, finish

    def test(self) -> bool:
        """True once the collective has completed (drives MPI's progress without blocking)."""
        return self.request is None or self.request.Test()

    def wait(self):
        """Block until complete, then finish; returns None."""
        if self.request is not None:
            self.comm.wait(self.request, self.what)
            self.request = None
        if self.finish is not None:
            finish, self.finish = self.finish, None
            finish()


class MpiCommunicator:
    """Collectives among the ranks of an MPI communicator (default: all ranks of the job).

    ``timeout`` (seconds) bounds every wait; when it passes, this rank writes a one-line reason
    to stderr and calls ``MPI_Abort``, which ends every rank of the job with an error.
    """

    def __init__(self, timeout: float, comm=None):
        self.MPI = import_mpi()
        self.comm = self.MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.timeout = float(timeout)
        node = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self._ops = {"sum": self.MPI.SUM, "max": self.MPI.MAX, "min": self.MPI.MIN}

    # ------------------------------------------------------------------ waiting with a deadline
    def wait(self, request, what):
        """Wait for ``request``; abort the job if it takes longer than the timeout."""
        deadline = time.monotonic() + self.timeout
        pause = 0.0
        while not request.Test():
            if time.monotonic() > deadline:
                self.abort(f"{what} did not complete within {self.timeout:g} s: another rank died, hangs or "
                           "called a different collective")
            # spin briefly (a collective of a training step takes micro- to milliseconds), then back off
            # so that a rank waiting on a slow peer leaves the CPU to it
            time.sleep(pause)
            pause = min(pause * 2 + 1e-5, 1e-3)

    def abort(self, reason):
        """Say why on stderr and end every rank of the job (exit code 1)."""
        sys.stderr.write(f"gpudl.distributed: rank {self.rank} of {self.size}: {reason}; aborting all ranks\n")
        sys.stderr.flush()
        time.sleep(0.5)  # the launcher forwards output asynchronously: MPI_Abort at once can lose the line
        self.comm.Abort(1)

    # ------------------------------------------------------------------ host staging of device arrays
    @staticmethod
    def _host_view(array):
        """(host buffer, function writing it back into ``array``) for an array of any backend."""
        if isinstance(array, numpy.ndarray):
            if not array.flags.c_contiguous:
                raise ValueError(f"gpudl.distributed: collectives need C-contiguous arrays, got strides "
                                 f"{array.strides} for shape {array.shape}")
            return array, None
        from . import backend_of
        host = numpy.ascontiguousarray(backend_of(array).to_host(array))

        def write_back():
            array[...] = backend_of(array).from_host(host, backend_of(array).device_of(array), copy=False)
        return host, write_back

    def _mpi_op(self, op):
        try:
            return self._ops[op]
        except KeyError:
            raise ValueError(f"gpudl.distributed: unknown reduction op {op!r}; use one of "
                             f"{', '.join(self._ops)}") from None

    # ------------------------------------------------------------------ collectives
    def start_all_reduce(self, array, op="sum") -> Request:
        """Start reducing ``array`` in place over all ranks (``sum``, ``max`` or ``min``)."""
        mpi_op = self._mpi_op(op)
        host, write_back = self._host_view(array)
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, host, op=mpi_op)
        return Request(self, request, f"all_reduce of {host.size} {host.dtype} values", write_back)

    def all_reduce(self, array, op="sum"):
        """Reduce ``array`` in place over all ranks."""
        self.start_all_reduce(array, op).wait()

    def broadcast(self, array, src=0):
        """Overwrite ``array`` on every rank with rank ``src``'s."""
        host, write_back = self._host_view(array)
        Request(self, self.comm.Ibcast(host, root=src), f"broadcast from rank {src} of {host.size} {host.dtype} "
                "values", write_back).wait()

    def all_gather(self, array, out):
        """Fill ``out`` (shape ``(size, *array.shape)``, same dtype) with every rank's ``array``."""
        host, _ = self._host_view(array)
        gathered, write_back = self._host_view(out)
        Request(self, self.comm.Iallgather(host, gathered), f"all_gather of {host.size} {host.dtype} values",
                write_back).wait()

    def barrier(self):
        """Wait until every rank has reached the barrier."""
        Request(self, self.comm.Ibarrier(), "barrier").wait()

    def close(self):
        """Nothing to release: COMM_WORLD lives as long as MPI (finalised by mpi4py at exit)."""
