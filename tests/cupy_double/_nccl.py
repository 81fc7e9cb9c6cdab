"""``cupy.cuda.nccl`` stand-in: NCCL's collectives done as MPI collectives on the host memory of
the double's device arrays, so that gpudl's NCCL communicator (``gpudl/backend/nccl_comm.py``) runs
under ``mpiexec`` on a CPU.

The API is CuPy 14's: ``get_unique_id()`` returns 128 bytes, ``NcclCommunicator(ndev, commId,
rank)`` takes them, and the collectives take raw pointers (``array.data.ptr``: host addresses in
the double), element counts, NCCL type and op codes and a stream pointer. Checks that real NCCL
would turn into a hang or garbage are errors here: ranks that joined with different unique ids or
a wrong ``ndev``/``rank``, and unknown type or op codes. What it cannot show: asynchrony (the
collective is done when the call returns), NCCL's reduction order, topology and transport.
"""
import ctypes
import os
import types

import numpy

# the values of the real cupy.cuda.nccl constants (checked against CuPy 14.2 with libnccl loaded)
CONSTANTS = {"NCCL_INT8": 0, "NCCL_CHAR": 0, "NCCL_UINT8": 1, "NCCL_INT32": 2, "NCCL_INT": 2, "NCCL_UINT32": 3,
             "NCCL_INT64": 4, "NCCL_UINT64": 5, "NCCL_FLOAT16": 6, "NCCL_HALF": 6, "NCCL_FLOAT32": 7,
             "NCCL_FLOAT": 7, "NCCL_FLOAT64": 8, "NCCL_DOUBLE": 8, "NCCL_SUM": 0, "NCCL_PROD": 1, "NCCL_MAX": 2,
             "NCCL_MIN": 3, "NCCL_AVG": 4}
_DTYPES = {0: numpy.int8, 1: numpy.uint8, 2: numpy.int32, 3: numpy.uint32, 4: numpy.int64, 5: numpy.uint64,
           6: numpy.float16, 7: numpy.float32, 8: numpy.float64}
UNIQUE_ID_BYTES = 128


class NcclError(RuntimeError):
    """``cupy.cuda.nccl.NcclError``."""


def get_unique_id() -> bytes:
    """A fresh 128-byte id (CuPy 14 returns bytes; earlier versions a tuple of ints)."""
    return os.urandom(UNIQUE_ID_BYTES)


def _mpi():
    from mpi4py import MPI
    return MPI


def _host_view(pointer, count, datatype):
    """The ``count`` elements of NCCL type ``datatype`` at host address ``pointer``, as a NumPy array."""
    if datatype not in _DTYPES:
        raise NcclError(f"NCCL_ERROR_INVALID_ARGUMENT: unknown datatype {datatype}")
    dtype = numpy.dtype(_DTYPES[datatype])
    if count == 0:
        return numpy.empty(0, dtype)
    memory = (ctypes.c_char * (count * dtype.itemsize)).from_address(pointer)
    return numpy.frombuffer(memory, dtype=dtype, count=count)


class NcclCommunicator:
    """One rank's member of an NCCL communicator, over ``MPI.COMM_WORLD``."""

    def __init__(self, ndev, commId, rank, config=None):
        if not isinstance(commId, bytes) or len(commId) != UNIQUE_ID_BYTES:
            raise TypeError(f"NcclCommunicator: commId must be the {UNIQUE_ID_BYTES} bytes of get_unique_id(), "
                            f"got {type(commId).__name__}")
        MPI = _mpi()
        self._comm = MPI.COMM_WORLD
        self._ops = {0: MPI.SUM, 1: MPI.PROD, 2: MPI.MAX, 3: MPI.MIN}
        if ndev != self._comm.Get_size() or rank != self._comm.Get_rank():
            raise NcclError(f"NCCL_ERROR_INVALID_ARGUMENT: ndev={ndev}, rank={rank} but the job has "
                            f"{self._comm.Get_size()} ranks and this is rank {self._comm.Get_rank()}")
        ids = numpy.empty((ndev, UNIQUE_ID_BYTES), numpy.uint8)
        self._comm.Allgather(numpy.frombuffer(commId, numpy.uint8), ids)
        if not (ids == ids[0]).all():
            raise NcclError("NCCL_ERROR_INVALID_USAGE: the ranks joined with different unique ids (real NCCL "
                            "would wait forever)")
        self._rank, self._size = rank, ndev

    def _reduce_op(self, op):
        if op == CONSTANTS["NCCL_AVG"]:
            return None
        if op not in self._ops:
            raise NcclError(f"NCCL_ERROR_INVALID_ARGUMENT: unknown reduction op {op}")
        return self._ops[op]

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):
        """Reduce ``count`` elements at ``sendbuf`` over the ranks into ``recvbuf``."""
        mpi_op = self._reduce_op(op)
        send, recv = _host_view(sendbuf, count, datatype), _host_view(recvbuf, count, datatype)
        if sendbuf != recvbuf:
            recv[...] = send
        self._comm.Allreduce(_mpi().IN_PLACE, recv, op=mpi_op or _mpi().SUM)
        if mpi_op is None:
            recv /= self._size

    def bcast(self, buff, count, datatype, root, stream):
        """Rank ``root``'s ``count`` elements at ``buff`` to every rank."""
        self._comm.Bcast(_host_view(buff, count, datatype), root=root)

    def broadcast(self, sendbuff, recvbuff, count, datatype, root, stream):
        """Rank ``root``'s elements at ``sendbuff`` into every rank's ``recvbuff``."""
        recv = _host_view(recvbuff, count, datatype)
        if self._rank == root and sendbuff != recvbuff:
            recv[...] = _host_view(sendbuff, count, datatype)
        self._comm.Bcast(recv, root=root)

    def allGather(self, sendbuf, recvbuf, count, datatype, stream):
        """Every rank's ``count`` elements, rank after rank, into ``recvbuf`` (``count * size`` elements)."""
        send = _host_view(sendbuf, count, datatype).copy()  # NCCL allows sendbuf inside recvbuf
        self._comm.Allgather(send, _host_view(recvbuf, count * self._size, datatype))

    def rank_id(self):
        return self._rank

    def size(self):
        return self._size

    def device_id(self):
        return 0

    def destroy(self):
        """Nothing to release."""

    abort = destroy


def register(modules):
    """Add ``cupy.cuda.nccl`` to the double's modules (``build()`` calls this)."""
    module = types.ModuleType("cupy.cuda.nccl", "cupy.cuda.nccl (cupy_double stand-in over MPI)")
    module.__file__ = __file__
    module.__dict__.update(CONSTANTS, available=True, NcclError=NcclError, NcclCommunicator=NcclCommunicator,
                           get_unique_id=get_unique_id, groupStart=lambda: None, groupEnd=lambda: None,
                           get_version=lambda: 23206, get_build_version=lambda: 23206)
    modules["cupy.cuda.nccl"] = module
    setattr(modules["cupy.cuda"], "nccl", module)
