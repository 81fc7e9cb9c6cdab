"""Run under ``mpiexec -n 2``: the collectives of ``gpudl.distributed`` and the samplers' defaults.
Each rank writes what it saw as JSON to ``<out>/rank<r>.json``."""
import json
import sys
from pathlib import Path

import gpudl
import gpudl.distributed as dist
from gpudl.data import DistributedSampler, TensorDataset


def values(tensor):
    return tensor.numpy().tolist()


def main():
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    seen = {"rank": rank, "world": world, "local_rank": dist.get_local_rank(), "backend": dist.get_backend(),
            "device": str(gpudl.default_device())}
    for op in ("sum", "mean", "max", "min"):
        t = gpudl.tensor([1.0 + rank, 10.0 * rank, -rank], dtype="float64")
        dist.all_reduce(t, op)
        seen[op] = values(t)
    counts = gpudl.tensor([rank + 1, 5])
    dist.all_reduce(counts)
    seen["int_sum"] = values(counts)
    b = gpudl.full((2, 3), float(rank + 7))
    dist.broadcast(b, src=1)
    seen["broadcast_from_1"] = values(b)
    gathered = [gpudl.zeros(2, dtype="float32") for _ in range(world)]
    dist.all_gather(gathered, gpudl.tensor([rank, rank * 2.0]))
    seen["all_gather"] = [values(g) for g in gathered]
    dist.barrier()
    data = TensorDataset(gpudl.arange(11))
    seen["sampler"] = list(DistributedSampler(data, shuffle=False))
    Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
