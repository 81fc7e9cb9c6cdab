"""gpudl.distributed in one process (a world of one rank, MPI initialised as a singleton), the
samplers, the engine's gradient-ready hook and the ``--nproc`` plumbing. The multi-rank runs under
``mpiexec`` are in test_distributed_mpi.py."""
import argparse
import subprocess
import sys

import numpy as np
import pytest

import gpudl
import gpudl.distributed as dist
from gpudl import nn
from gpudl.autograd import engine, gradcheck
from gpudl.backend import BackendError
from gpudl.data import BatchSampler, DistributedSampler, RandomSampler, ShardedBatchSampler, TensorDataset
from gpudl.data.distributed_sampler import shard_bounds
from gpudl.nn.parallel import DistributedDataParallel

from conftest import subprocess_env, to_numpy

pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'gpudl[mpi]')")


@pytest.fixture
def group():
    """The default process group of this single process (NCCL under the CuPy backend, else MPI)."""
    dist.init_process_group()
    yield
    dist.destroy_process_group()


# ---------------------------------------------------------------- samplers
def test_distributed_sampler_shards_one_permutation():
    data = TensorDataset(gpudl.arange(10))
    shards = [list(DistributedSampler(data, num_replicas=3, rank=r, seed=4)) for r in range(3)]
    order = RandomSampler(data, seed=4).indices(0).tolist()  # what one shuffled process sees
    assert [len(s) for s in shards] == [4, 4, 4]
    padded = order + order[:2]
    assert shards == [padded[r::3] for r in range(3)]
    assert set(sum(shards, [])) == set(range(10))


def test_distributed_sampler_epochs_drop_last_and_order():
    data = TensorDataset(gpudl.arange(10))
    sampler = DistributedSampler(data, num_replicas=3, rank=1, seed=0, drop_last=True)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert len(first) == len(second) == len(sampler) == 3
    assert first != second
    assert list(DistributedSampler(data, num_replicas=4, rank=3, shuffle=False)) == [3, 7, 1]


@pytest.mark.parametrize("kwargs, message", [({"num_replicas": 2, "rank": 2}, "rank must be in"),
                                             ({"num_replicas": 0, "rank": 0}, "num_replicas must be a positive")])
def test_distributed_sampler_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistributedSampler(TensorDataset(gpudl.arange(4)), **kwargs)


def test_distributed_sampler_needs_a_group_for_defaults():
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedSampler(TensorDataset(gpudl.arange(4)))


@pytest.mark.parametrize("n, ranks", [(10, 3), (7, 7), (2, 4), (128, 2)])
def test_shard_bounds_split_evenly(n, ranks):
    bounds = [shard_bounds(n, ranks, r) for r in range(ranks)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_sharded_batches_reassemble_the_one_process_batches():
    data = TensorDataset(gpudl.arange(23))
    batches = BatchSampler(RandomSampler(data, seed=2), 8, drop_last=False)
    shards = [ShardedBatchSampler(BatchSampler(RandomSampler(data, seed=2), 8, False), 3, r) for r in range(3)]
    for shard in shards:
        shard.set_epoch(1)
    batches.set_epoch(1)
    per_rank = [list(s) for s in shards]
    for k, batch in enumerate(batches):
        assert sum((per_rank[r][k] for r in range(3)), []) == batch
    assert len(shards[0]) == len(batches) == 3


def test_sharded_batch_of_fewer_examples_than_ranks_gives_a_placeholder():
    shard = ShardedBatchSampler([[5, 6, 7, 8], [9]], num_replicas=2, rank=1)
    assert list(shard) == [[7, 8], [9]]


# ---------------------------------------------------------------- process group, world of one
def test_group_lifecycle_and_errors():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="has not been initialized"):
        dist.get_rank()
    with pytest.raises(ValueError, match="backend must be one of"):
        dist.init_process_group("gloo")
    with pytest.raises(ValueError, match="timeout must be a positive"):
        dist.init_process_group(timeout=0)
    dist.init_process_group()
    try:
        assert dist.is_initialized()
        assert (dist.get_rank(), dist.get_world_size(), dist.get_local_rank()) == (0, 1, 0)
        assert dist.get_backend() == ("nccl" if gpudl.default_device().kind == "cuda" else "mpi")
        with pytest.raises(RuntimeError, match="already initialized"):
            dist.init_process_group()
    finally:
        dist.destroy_process_group()
    assert not dist.is_initialized()


def test_collectives_in_a_world_of_one(group):
    t = gpudl.tensor([1.0, -2.0, 3.0])
    version = t._version[0]
    for op in ("sum", "mean", "max", "min"):
        dist.all_reduce(t, op)
    np.testing.assert_array_equal(to_numpy(t), [1.0, -2.0, 3.0])
    assert t._version[0] == version + 4  # each collective counts as an in-place change
    dist.broadcast(t, src=0)
    out = [gpudl.zeros(3)]
    dist.all_gather(out, t)
    np.testing.assert_array_equal(to_numpy(out[0]), [1.0, -2.0, 3.0])
    dist.barrier()


def test_collective_errors(group):
    t = gpudl.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="op must be one of"):
        dist.all_reduce(t, "avg")
    with pytest.raises(TypeError, match="needs a float tensor"):
        dist.all_reduce(gpudl.tensor([1, 2]), "mean")
    with pytest.raises(TypeError, match="expected a Tensor"):
        dist.all_reduce([1.0, 2.0])
    with pytest.raises(ValueError, match="src must be a rank in"):
        dist.broadcast(t, src=1)
    with pytest.raises(ValueError, match="must hold 1 tensors"):
        dist.all_gather([t, t], t)
    with pytest.raises(ValueError, match=r"tensor_list\[0\] has shape \(3,\)"):
        dist.all_gather([gpudl.zeros(3)], t)
    with pytest.raises(ValueError, match="C-contiguous"):
        dist.all_reduce(gpudl.zeros(4, 4).T)


# ---------------------------------------------------------------- the engine's gradient-ready hook
class _Recorder:
    def __init__(self):
        self.events = []

    def ready(self, leaf):
        self.events.append(("ready", float(leaf.grad.sum())))

    def done(self):
        self.events.append(("done",))


def test_grad_ready_hook_fires_after_the_last_accumulation():
    w = gpudl.tensor([1.0, 2.0], requires_grad=True, dtype="float64")
    unused = gpudl.tensor([1.0], requires_grad=True)
    recorder = _Recorder()
    engine.register_grad_ready_hooks(recorder, [w, unused])
    try:
        ((w * 3).sum() + (w * w).sum()).backward()  # two edges bring w a gradient
        assert recorder.events == [("ready", 3 * 2 + 2 * (1 + 2)), ("done",)]
        recorder.events.clear()
        gpudl.autograd.grad((w * 2).sum(), w)  # grad() touches no .grad: no hooks
        assert recorder.events == []
    finally:
        engine.remove_grad_ready_hooks([w, unused])
    (w * 1).sum().backward()
    assert recorder.events == []


# ---------------------------------------------------------------- DistributedDataParallel, world of one
def test_ddp_wraps_forwards_and_averages(group, device):
    model = nn.Sequential(nn.Linear(4, 8, device=device), nn.ReLU(), nn.Linear(8, 2, device=device))
    reference = [to_numpy(p) for p in model.parameters()]
    ddp = DistributedDataParallel(model, bucket_cap_mb=3e-5)  # 31 bytes: one bucket per parameter
    assert ddp.module is model
    assert len(ddp._reducer.buckets) == 4
    assert list(ddp.state_dict()) == [f"module.{k}" for k in model.state_dict()]
    x = gpudl.randn(5, 4, device=device)
    out = ddp(x)
    np.testing.assert_allclose(to_numpy(out), to_numpy(model(x)))
    out.sum().backward()
    grads = [to_numpy(p.grad) for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    model(x).sum().backward()  # the same backward without DDP: averaging over one rank changes nothing
    for g, p in zip(grads, model.parameters()):
        np.testing.assert_allclose(g, to_numpy(p.grad), rtol=1e-6)
    for before, p in zip(reference, model.parameters()):
        np.testing.assert_array_equal(before, to_numpy(p))  # broadcast from rank 0 = itself


def test_ddp_no_sync_and_unused_parameters(group):
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(3, 1), nn.Linear(3, 1)

        def forward(self, x):
            return self.used(x)

    ddp = DistributedDataParallel(TwoHeads())
    x = gpudl.randn(2, 3)
    with ddp.no_sync():
        ddp(x).sum().backward()
        assert ddp.module.unused.weight.grad is None  # no all-reduce, nothing written
    ddp(x).sum().backward()
    np.testing.assert_array_equal(to_numpy(ddp.module.unused.weight.grad), np.zeros((1, 3)))
    expected = 2 * to_numpy(x).sum(axis=0)  # two accumulated backwards of sum(x @ w.T)
    np.testing.assert_allclose(to_numpy(ddp.module.used.weight.grad)[0], expected, rtol=1e-6)
    assert ddp.communication_seconds > 0


def test_ddp_unhooks_its_parameters_when_it_goes(group):
    import gc
    model = nn.Linear(2, 2)
    ddp = DistributedDataParallel(model)
    assert id(model.weight) in engine._ready_hooks
    del ddp
    gc.collect()
    assert id(model.weight) not in engine._ready_hooks and id(model.bias) not in engine._ready_hooks


def test_ddp_errors(group):
    with pytest.raises(TypeError, match="expected an nn.Module"):
        DistributedDataParallel(lambda x: x)
    with pytest.raises(ValueError, match="bucket_cap_mb must be > 0"):
        DistributedDataParallel(nn.Linear(2, 2), bucket_cap_mb=0)


def test_ddp_needs_a_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedDataParallel(nn.Linear(2, 2))


# ---------------------------------------------------------------- SyncBatchNorm
def test_sync_normalize_gradcheck(group):
    from gpudl.distributed.process_group import communicator
    from gpudl.nn.sync_batchnorm import SyncNormalize
    x = gpudl.randn(6, 3, 2, dtype="float64", requires_grad=True)
    w = gpudl.randn(3, dtype="float64", requires_grad=True)
    b = gpudl.randn(3, dtype="float64", requires_grad=True)

    def sync_batch_norm(x, w, b):
        axes, shape = (0, 2), (1, 3, 1)
        return SyncNormalize(communicator(), 12, "SyncBatchNorm", axes, shape, axes, 1e-5).apply(x, w, b)

    assert gradcheck(sync_batch_norm, x, w, b)
    reference = nn.functional.batch_norm(x, None, None, w, b, training=True)
    np.testing.assert_allclose(to_numpy(sync_batch_norm(x, w, b)), to_numpy(reference), rtol=1e-12, atol=1e-12)


def test_convert_sync_batchnorm_keeps_parameters_buffers_and_mode():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.BatchNorm2d(2)))
    model[1].running_mean.fill_(0.5)
    model.eval()
    weight, running_mean = model[1].weight, model[1].running_mean
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert converted is model
    assert isinstance(model[1], nn.SyncBatchNorm) and isinstance(model[2][0], nn.SyncBatchNorm)
    assert model[1].weight is weight and model[1].running_mean is running_mean
    assert not model[1].training
    x = gpudl.randn(5, 3)
    model.train()
    y = model[1](model[0](x))  # without a group of several ranks it is BatchNorm
    assert y.shape == (5, 4)
    with pytest.raises(NotImplementedError, match="default process group"):
        nn.SyncBatchNorm(4, process_group=object())


# ---------------------------------------------------------------- --nproc plumbing
def test_find_mpiexec_error_names_the_extra(monkeypatch, tmp_path):
    from gpudl.distributed import training
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackendError, match=r"pip install 'gpudl\[mpi\]'"):
        training.find_mpiexec()


def test_rank_command_line_repeats_the_options():
    from gpudl.commands import train
    parser = argparse.ArgumentParser()
    train.add_parser(parser.add_subparsers())
    argv = ["train", "cnn", "--epochs", "2", "--lr", "0.05", "--plot", "--resume", "--nproc", "4",
            "--batch-size", "64"]
    args = parser.parse_args(argv)
    again = parser.parse_args(train._rank_command_line(args))
    assert "--nproc" not in train._rank_command_line(args)
    assert {k: v for k, v in vars(again).items() if k != "nproc"} == \
        {k: v for k, v in vars(args).items() if k != "nproc"}


def test_mpi_launch_without_mpi4py_is_a_one_line_error(tmp_path):
    hidden = tmp_path / "mpi4py"
    hidden.mkdir()
    (hidden / "__init__.py").write_text("raise ImportError('No module named mpi4py (hidden by the test)')\n")
    env = subprocess_env(PMI_SIZE="2", PMI_RANK="0", GPUDL_BACKEND="numpy")
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    result = subprocess.run([sys.executable, "-m", "gpudl.cli", "train", "mlp", "--limit", "50", "--out",
                             str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpudl: error: ") and "pip install 'gpudl[mpi]'" in lines[0]
