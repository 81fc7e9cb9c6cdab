"""Data-parallel training across processes, GPUs and machines: a process group over MPI (host
arrays) or NCCL (GPU arrays, bootstrapped over MPI), and collectives on tensors.

Start the ranks with an MPI launcher (``mpiexec -n 4 python train.py``, ``srun``, or
``gpudl train MODEL --nproc 4``), then::

    import gpudl.distributed as dist
    dist.init_process_group()                     # NCCL on the CuPy backend, MPI on NumPy
    model = gpudl.nn.parallel.DistributedDataParallel(model)
"""
from .process_group import (all_gather, all_reduce, barrier, broadcast, destroy_process_group, get_backend,
                            get_local_rank, get_rank, get_world_size, init_process_group, is_initialized)

__all__ = ["all_gather", "all_reduce", "barrier", "broadcast", "destroy_process_group", "get_backend",
           "get_local_rank", "get_rank", "get_world_size", "init_process_group", "is_initialized"]
