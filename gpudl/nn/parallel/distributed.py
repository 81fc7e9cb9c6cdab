"""``DistributedDataParallel``: one model replica per rank, gradients averaged over the ranks."""
import contextlib
import json
import weakref

from ...autograd import engine
from ...distributed.process_group import communicator, gather_bytes
from ..module import Module
from .reducer import GradientReducer


def _layout(module):
    """(kind, name, shape, dtype) of every parameter and buffer, in registration order."""
    entries = [("parameter", name, list(p.shape), str(p.dtype)) for name, p in module.named_parameters()]
    entries += [("buffer", name, list(b.shape), str(b.dtype)) for name, b in module.named_buffers()]
    return entries


def _check_same_layout(comm, module):
    """Raise on every rank if some rank's parameters or buffers differ from rank 0's."""
    mine = _layout(module)
    layouts = [json.loads(b) for b in gather_bytes(json.dumps(mine).encode())]
    reference = layouts[0]
    problems = []
    for rank, layout in enumerate(layouts[1:], 1):
        if layout == reference:
            continue
        ref_by_name = {(kind, name): (shape, dtype) for kind, name, shape, dtype in reference}
        by_name = {(kind, name): (shape, dtype) for kind, name, shape, dtype in layout}
        for key in sorted(set(ref_by_name) | set(by_name)):
            if key not in by_name:
                problems.append(f"rank {rank} lacks {key[0]} '{key[1]}'")
            elif key not in ref_by_name:
                problems.append(f"rank {rank} has {key[0]} '{key[1]}' that rank 0 lacks")
            elif by_name[key] != ref_by_name[key]:
                (shape, dtype), (ref_shape, ref_dtype) = by_name[key], ref_by_name[key]
                problems.append(f"{key[0]} '{key[1]}' is {tuple(shape)} {dtype} on rank {rank} but "
                                f"{tuple(ref_shape)} {ref_dtype} on rank 0")
        if not problems:
            problems.append(f"rank {rank} registers its parameters or buffers in another order than rank 0")
    if problems:
        raise ValueError("DistributedDataParallel: the ranks' models differ: " + "; ".join(problems[:10])
                         + ("" if len(problems) <= 10 else f"; and {len(problems) - 10} more"))


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training over the default process group.

    At construction the ranks' parameter and buffer names, shapes and dtypes are compared (an
    error names the differences) and rank 0's values are broadcast to every rank. After each
    ``backward()`` every parameter's ``.grad`` is the average over the ranks: gradients are packed
    into buckets of at most ``bucket_cap_mb`` MB (the first 1 MB), and a bucket's all-reduce starts
    during backward as soon as all its gradients are complete. With ``broadcast_buffers`` (the
    default, as PyTorch) rank 0's buffers (BatchNorm running statistics) are broadcast before each
    training forward; batch statistics stay per rank (use ``nn.SyncBatchNorm`` to share them).
    Parameters no backward reached count as zero gradients. ``device_ids``/``output_device`` are
    accepted for PyTorch scripts; the model's device (from the rank's local rank) is used.
    """

    def __init__(self, module, device_ids=None, output_device=None, broadcast_buffers=True, bucket_cap_mb=4.0):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: expected an nn.Module, got {type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be > 0, got {bucket_cap_mb!r}")
        comm = communicator()
        self.module = module
        self.broadcast_buffers = broadcast_buffers
        self._comm = comm
        _check_same_layout(comm, module)
        for tensor in (*module.parameters(), *module.buffers()):
            comm.broadcast(tensor.data, 0)
        trained = [p for p in module.parameters() if p.requires_grad]
        self._reducer = GradientReducer(comm, trained, bucket_cap_mb) if trained else None
        if trained:
            engine.register_grad_ready_hooks(self._reducer, trained)
            weakref.finalize(self, engine.remove_grad_ready_hooks, trained)  # unhook when the wrapper goes

    @property
    def communication_seconds(self) -> float:
        """Seconds this rank spent starting and waiting for gradient all-reduces so far."""
        return 0.0 if self._reducer is None else self._reducer.communication_seconds

    def forward(self, *args, **kwargs):
        if self._reducer is not None:
            self._reducer.reset()
        if self.training and self.broadcast_buffers:
            for buffer in self.module.buffers():
                self._comm.broadcast(buffer.data, 0)
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Within the block backward accumulates gradients locally without all-reducing them; the
        first backward after it averages the accumulated sum (gradient accumulation)."""
        if self._reducer is None:
            yield
            return
        previous, self._reducer.sync = self._reducer.sync, False
        try:
            yield
        finally:
            self._reducer.sync = previous
