"""The default process group: which communicator the ranks share, and collectives on tensors.

Collectives change their tensor in place (PyTorch's ``torch.distributed`` conventions) and move
the tensor's own array buffer: host arrays over MPI, GPU arrays over NCCL (or, with
``backend="mpi"``, over MPI through host copies).
"""
import datetime
import os

from .. import backend as _backend
from ..tensor import Tensor

BACKENDS = ("auto", "mpi", "nccl")
REDUCE_OPS = ("sum", "mean", "max", "min")
DEFAULT_TIMEOUT_S = 600.0
_state = {"comm": None, "backend": None}


def _timeout_seconds(timeout):
    if timeout is None:
        raw = os.environ.get("GPUDL_DIST_TIMEOUT", "")
        try:
            timeout = float(raw) if raw else DEFAULT_TIMEOUT_S
        except ValueError:
            raise ValueError(f"GPUDL_DIST_TIMEOUT={raw!r} is not a number of seconds") from None
    elif isinstance(timeout, datetime.timedelta):
        timeout = timeout.total_seconds()
    if not timeout > 0:
        raise ValueError(f"init_process_group: timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def init_process_group(backend="auto", timeout=None):
    """Join the ranks started by an MPI launcher into the default process group.

    ``backend``: ``"nccl"`` (GPU tensors over NCCL, host tensors over MPI), ``"mpi"`` (everything
    over MPI; GPU tensors through host copies) or ``"auto"`` (NCCL when the default device is a
    GPU, else MPI). On a GPU every rank then uses the GPU of its local rank (modulo the GPUs it
    sees) as its default device. ``timeout`` (seconds or a ``timedelta``; default
    ``$GPUDL_DIST_TIMEOUT``, else 600) bounds each wait of an MPI collective: when a rank dies or
    hangs, the others abort the job with an error instead of waiting forever.
    """
    if _state["comm"] is not None:
        raise RuntimeError("init_process_group: the default process group is already initialized "
                           "(call destroy_process_group() first)")
    if backend not in BACKENDS:
        raise ValueError(f"init_process_group: backend must be one of {', '.join(map(repr, BACKENDS))}, "
                         f"got {backend!r}")
    seconds = _timeout_seconds(timeout)
    on_gpu = _backend.default_device().kind == "cuda"
    if backend == "auto":
        backend = "nccl" if on_gpu else "mpi"
    if backend == "nccl":
        _backend.get_cupy_backend()  # a clear error when CuPy or a GPU is missing
        from ..backend.nccl_comm import NcclCommunicator
        comm = NcclCommunicator(seconds)
    else:
        from ..backend.mpi_comm import MpiCommunicator
        comm = MpiCommunicator(seconds)
    if on_gpu or backend == "nccl":
        gpus = _backend.get_cupy_backend().device_count()
        # the GPU of this rank's place on its machine (with one visible GPU per rank: its device 0)
        _backend.set_default_device(f"cuda:{comm.local_rank % gpus}")
    _state.update(comm=comm, backend=backend)


def is_initialized() -> bool:
    """True between ``init_process_group()`` and ``destroy_process_group()``."""
    return _state["comm"] is not None


def communicator():
    """The default group's communicator (for DistributedDataParallel and SyncBatchNorm)."""
    comm = _state["comm"]
    if comm is None:
        raise RuntimeError("gpudl.distributed: the default process group has not been initialized; "
                           "call gpudl.distributed.init_process_group() first")
    return comm


def get_backend() -> str:
    """``"mpi"`` or ``"nccl"``."""
    communicator()
    return _state["backend"]


def get_rank() -> int:
    """This process's rank in the group, 0 .. world size - 1."""
    return communicator().rank


def get_world_size() -> int:
    """The number of ranks in the group."""
    return communicator().size


def get_local_rank() -> int:
    """This process's rank among the ranks on its machine (picks its GPU)."""
    return communicator().local_rank


def barrier():
    """Block until every rank has called ``barrier()``."""
    communicator().barrier()


def _check_tensor(tensor, op):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"gpudl.distributed.{op}: expected a Tensor, got {type(tensor).__name__}")


def _changed_in_place(tensor):
    tensor._version[0] += 1  # a tensor saved for backward and then overwritten here is reported


def all_reduce(tensor, op="sum"):
    """Replace ``tensor`` on every rank with the reduction over ranks: ``"sum"``, ``"mean"``,
    ``"max"`` or ``"min"`` (``"mean"`` needs a float tensor)."""
    _check_tensor(tensor, "all_reduce")
    if op not in REDUCE_OPS:
        raise ValueError(f"gpudl.distributed.all_reduce: op must be one of {', '.join(map(repr, REDUCE_OPS))}, "
                         f"got {op!r}")
    if op == "mean" and not _backend.is_float_dtype(tensor.dtype):
        raise TypeError(f"gpudl.distributed.all_reduce: op='mean' needs a float tensor, got dtype {tensor.dtype}")
    comm = communicator()
    comm.all_reduce(tensor.data, "sum" if op == "mean" else op)
    if op == "mean":
        tensor.data /= comm.size
    _changed_in_place(tensor)


def broadcast(tensor, src):
    """Overwrite ``tensor`` on every rank with rank ``src``'s."""
    _check_tensor(tensor, "broadcast")
    comm = communicator()
    if not 0 <= src < comm.size:
        raise ValueError(f"gpudl.distributed.broadcast: src must be a rank in [0, {comm.size}), got {src}")
    comm.broadcast(tensor.data, src)
    _changed_in_place(tensor)


def all_gather(tensor_list, tensor):
    """Fill ``tensor_list`` (world size tensors shaped like ``tensor``) with every rank's ``tensor``."""
    _check_tensor(tensor, "all_gather")
    comm = communicator()
    if len(tensor_list) != comm.size:
        raise ValueError(f"gpudl.distributed.all_gather: tensor_list must hold {comm.size} tensors (the world "
                         f"size), got {len(tensor_list)}")
    for k, out in enumerate(tensor_list):
        _check_tensor(out, "all_gather")
        if out.shape != tensor.shape or out.dtype != tensor.dtype:
            raise ValueError(f"gpudl.distributed.all_gather: tensor_list[{k}] has shape {out.shape} and dtype "
                             f"{out.dtype}, expected {tensor.shape} and {tensor.dtype} like the input")
    xp = tensor.backend.xp
    with tensor.backend.context(tensor.device):
        gathered = xp.empty((comm.size, *tensor.shape), dtype=tensor.dtype)
        comm.all_gather(xp.ascontiguousarray(tensor.data), gathered)
    for k, out in enumerate(tensor_list):
        out.data[...] = _backend.to_device(gathered[k], out.device)
        _changed_in_place(out)


def gather_bytes(payload: bytes):
    """Every rank's ``payload``, as a list indexed by rank (moved as byte buffers, not pickled)."""
    comm = communicator()
    xp = _backend.NUMPY.xp
    lengths = xp.empty((comm.size, 1), dtype=_backend.int64)
    comm.all_gather(xp.array([len(payload)], dtype=_backend.int64), lengths)
    longest = int(lengths.max())
    padded = xp.zeros(longest, dtype=_backend.uint8)
    padded[:len(payload)] = xp.frombuffer(payload, dtype=_backend.uint8)
    gathered = xp.empty((comm.size, longest), dtype=_backend.uint8)
    comm.all_gather(padded, gathered)
    return [gathered[r, :int(lengths[r, 0])].tobytes() for r in range(comm.size)]


def broadcast_bytes(payload: bytes, src: int) -> bytes:
    """Rank ``src``'s ``payload`` on every rank (other ranks' ``payload`` is ignored)."""
    comm = communicator()
    xp = _backend.NUMPY.xp
    length = xp.array([len(payload)], dtype=_backend.int64)
    comm.broadcast(length, src)
    buffer = xp.zeros(int(length[0]), dtype=_backend.uint8)
    if comm.rank == src:
        buffer[:] = xp.frombuffer(payload, dtype=_backend.uint8)
    comm.broadcast(buffer, src)
    return buffer.tobytes()


def destroy_process_group():
    """Leave the default process group (MPI itself stays up until the process exits)."""
    comm = communicator()
    comm.close()
    _state.update(comm=None, backend=None)
