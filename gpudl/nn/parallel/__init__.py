"""Data parallelism: ``DistributedDataParallel`` over the process group of ``gpudl.distributed``."""
from .distributed import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
