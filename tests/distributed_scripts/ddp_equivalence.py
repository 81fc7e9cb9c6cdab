"""Run under ``mpiexec -n 2``: DDP with different initial weights per rank, 5 SGD-momentum steps,
each rank on its half of a 64-sample batch, against one process training on the whole batch.
Each rank writes its findings as JSON to ``<out>/rank<r>.json`` (``out``: the first argument).
Options: ``--sync-batchnorm`` (a BatchNorm layer, SyncBatchNorm under DDP), ``--mpi`` (the MPI backend
even for GPU tensors)."""
import json
import sys
from pathlib import Path

import gpudl
import gpudl.distributed as dist
from gpudl import nn, optim
from gpudl.nn.parallel import DistributedDataParallel

BATCH, STEPS = 64, 5


def make_model(seed, batch_norm):
    gpudl.manual_seed(seed)
    layers = [nn.Linear(10, 32, dtype="float64")]
    layers += [nn.BatchNorm1d(32, dtype="float64")] if batch_norm else []
    layers += [nn.Tanh(), nn.Linear(32, 4, dtype="float64")]
    return nn.Sequential(*layers)


def train(model, inputs, targets, parts):
    """STEPS momentum-SGD steps; ``parts(step)`` picks this process's rows of the batch."""
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(STEPS):
        rows = parts()
        loss = nn.functional.softmax_cross_entropy(model(inputs[rows]), targets[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main():
    batch_norm = "--sync-batchnorm" in sys.argv
    dist.init_process_group("mpi" if "--mpi" in sys.argv else "auto")
    rank, world = dist.get_rank(), dist.get_world_size()
    gpudl.manual_seed(1234)
    inputs = gpudl.randn(BATCH, 10, dtype="float64")
    targets = gpudl.randint(0, 4, (BATCH,))

    reference = make_model(7, batch_norm)  # rank 0's initial weights, the whole batch in one process
    train(reference, inputs, targets, lambda: slice(0, BATCH))

    model = make_model(7 + 100 * rank, batch_norm)  # different weights per rank
    if batch_norm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = DistributedDataParallel(model)
    share = BATCH // world
    train(model, inputs, targets, lambda: slice(rank * share, (rank + 1) * share))

    reference_state = reference.state_dict()
    state = model.module.state_dict()
    gap = max(float((state[k].double() - reference_state[k].double()).abs().max()) for k in state)
    spread = 0.0
    for name, value in state.items():
        gathered = [gpudl.zeros_like(value) for _ in range(world)]
        dist.all_gather(gathered, value)
        spread = max(spread, max(float((g.double() - gathered[0].double()).abs().max()) for g in gathered))
    Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps({
        "world": world, "backend": dist.get_backend(), "device": str(inputs.device), "max_gap_to_one_process": gap, "max_spread_over_ranks": spread,
        "communication_seconds": model.communication_seconds}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
