"""Data-parallel ``gpudl train``: starting N ranks under MPI, and what the training loop needs to
run as one rank of N while training the same model as one process.

Each global batch of the one-process data order is split across the ranks (``ShardedBatchSampler``);
rank r's mean loss is weighted by ``n_r * N / n`` (``n_r`` of the batch's ``n`` examples are its), so
that the average of the ranks' gradients that DistributedDataParallel computes is the gradient of the
mean loss over the whole batch, an uneven last batch included.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .. import backend as _backend
from ..backend.mpi_comm import INSTALL_HINT, launched_world_size
from ..data.distributed_sampler import ShardedBatchSampler, shard_bounds
from .process_group import communicator, init_process_group

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def find_mpiexec() -> str:
    """The ``mpiexec`` installed next to the running Python (``gpudl[mpi]``), else one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("mpiexec")
    if found is None:
        raise _backend.BackendError(f"--nproc needs an MPI launcher (mpiexec) and mpi4py; none found next to "
                                    f"{sys.executable} or on PATH: {INSTALL_HINT}")
    return found


def launch(nproc: int, command_args) -> int:
    """Run ``python -m gpudl.cli *command_args`` as ``nproc`` MPI ranks; return 0 when all succeed.

    Each rank gets (cores / nproc) BLAS and OpenMP threads unless the thread variables are set."""
    mpiexec = find_mpiexec()
    env = dict(os.environ)
    threads = max(1, len(os.sched_getaffinity(0)) // nproc)
    for name in THREAD_VARIABLES:
        env.setdefault(name, str(threads))
    completed = subprocess.run([mpiexec, "-n", str(nproc), sys.executable, "-m", "gpudl.cli", *command_args],
                               env=env, check=False)
    return 0 if completed.returncode == 0 else 1


def in_mpi_launch() -> bool:
    """True in a process that an MPI launcher started as one of several ranks."""
    return launched_world_size() > 1


class DataParallelRun:
    """One rank's part of a data-parallel training run: the process group, the sharding of the
    training batches and evaluation sets, the loss weights, and sums of metrics over the ranks."""

    def __init__(self, batch_size: int):
        init_process_group()
        self.comm = communicator()
        self.rank, self.size = self.comm.rank, self.comm.size
        self.is_writer = self.rank == 0
        self.batch_size, self.train_size = batch_size, None

    def wrap(self, model):
        """``model`` for this rank: BatchNorm layers made SyncBatchNorm (statistics of the whole batch, as
        in one process), wrapped in DistributedDataParallel (rank 0's weights, averaged gradients)."""
        from ..nn import SyncBatchNorm
        from ..nn.parallel import DistributedDataParallel
        self.model = DistributedDataParallel(SyncBatchNorm.convert_sync_batchnorm(model))
        self._communication_counted = 0.0
        return self.model

    def communication_per_step(self, history) -> str:
        """This rank's gradient all-reduce time per step in the last epoch (time backward did not hide),
        appended to ``history["communication_seconds_per_step"]``, as text."""
        spent = self.model.communication_seconds - self._communication_counted
        self._communication_counted = self.model.communication_seconds
        per_step = spent / -(-self.train_size // self.batch_size)
        history.setdefault("communication_seconds_per_step", []).append(per_step)
        return f"{1000 * per_step:.2f} ms/step on rank 0"

    def shard_train_loader(self, loader):
        """A loader over this rank's part of each of ``loader``'s batches (same order, same epochs)."""
        from ..data import DataLoader
        self.train_size = len(loader.dataset)
        return DataLoader(loader.dataset, batch_sampler=ShardedBatchSampler(loader.batch_sampler, self.size,
                                                                            self.rank), device=loader.device)

    def shard_dataset(self, dataset):
        """This rank's contiguous share of ``dataset`` (for evaluation: the shards cover it exactly once)."""
        from ..data import Subset
        start, stop = shard_bounds(len(dataset), self.size, self.rank)
        return Subset(dataset, range(start, stop))

    def step_share(self, step: int):
        """(examples of this rank in training step ``step`` (1-based), weight of its mean loss)."""
        global_count = min(self.batch_size, self.train_size - (step - 1) * self.batch_size)
        start, stop = shard_bounds(global_count, self.size, self.rank)
        return stop - start, (stop - start) * self.size / global_count

    def sum_over_ranks(self, *values):
        """The sums over all ranks of a few host numbers (one small all-reduce)."""
        totals = _backend.NUMPY.xp.array(values, dtype=_backend.float64)
        self.comm.all_reduce(totals, "sum")
        return tuple(float(v) for v in totals)

    def from_rank0(self, make_path, *args) -> Path:
        """``make_path(*args)`` run on rank 0 only, its result (a path) given to every rank."""
        from .process_group import broadcast_bytes
        text = str(make_path(*args)) if self.is_writer else ""
        return Path(broadcast_bytes(text.encode(), 0).decode())
