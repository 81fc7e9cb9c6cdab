"""Run under ``mpiexec -n 2``: one rank misbehaves (argument: ``die``, ``hang`` or ``mismatch``);
the other must end with an error instead of waiting forever."""
import os
import sys
import time

import gpudl
import gpudl.distributed as dist
from gpudl import nn
from gpudl.nn.parallel import DistributedDataParallel


def main():
    mode = sys.argv[1]
    dist.init_process_group(timeout=float(os.environ.get("FAULT_TIMEOUT", "3")))
    rank = dist.get_rank()
    value = gpudl.ones(4)
    dist.all_reduce(value)  # everyone is up
    if mode == "mismatch":
        DistributedDataParallel(nn.Linear(3, 5 if rank == 0 else 6))
    elif rank == 1 and mode == "die":
        os._exit(7)
    elif rank == 1 and mode == "hang":
        time.sleep(120)
    dist.all_reduce(value)
    print(f"rank {rank}: unexpectedly finished", flush=True)


if __name__ == "__main__":
    main()
