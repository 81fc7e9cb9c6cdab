"""``SyncBatchNorm``: batch normalisation whose batch statistics are those of the global batch,
the union of every rank's shard, so N ranks normalise as one process with the whole batch."""
from .. import backend as _backend
from ..distributed.process_group import communicator, is_initialized
from ..ops.normalization import Normalize, apply_training, batch_norm, check_batch_norm_inputs
from .normalization import _BatchNorm


class SyncNormalize(Normalize):
    """``Normalize`` whose means over the statistics axes run over the union of the ranks' inputs:
    local sums, all-reduced, over the global count. In backward the same averaging of
    ``g`` and ``g * normalized`` gives each rank the gradient through the global statistics."""

    def __init__(self, comm, global_count, *args):
        super().__init__(*args)
        self.comm, self.global_count = comm, global_count

    def axis_mean(self, array, dtype=None):
        total = array.sum(axis=self.stats_axes, keepdims=True, dtype=dtype)
        self.comm.all_reduce(total, "sum")
        total /= self.global_count
        return total


def sync_batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                    eps=1e-5):
    """``batch_norm`` with the batch statistics of all ranks' inputs together (outside training, or
    without a process group of several ranks, it is ``batch_norm``)."""
    if not (training and is_initialized() and communicator().size > 1):
        return batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    op = "sync_batch_norm"
    axes, param_shape = check_batch_norm_inputs(op, input, running_mean, running_var, weight, bias)
    comm = communicator()
    count = _backend.NUMPY.xp.array([input.size // input.shape[1]], dtype=_backend.int64)
    comm.all_reduce(count, "sum")
    count = int(count[0])
    if count <= 1:
        raise ValueError(f"{op}: expected more than 1 value per channel over all ranks when training, got "
                         f"{count} (input of shape {input.shape} on this rank)")
    fn = SyncNormalize(comm, count, "SyncBatchNorm", axes, param_shape, axes, eps)
    return apply_training(fn, input, weight, bias, running_mean, running_var, momentum, count)


class SyncBatchNorm(_BatchNorm):
    """Batch normalisation of [N, C, *] inputs whose training statistics (and running statistics)
    come from the whole batch over all ranks of the default process group, as PyTorch's
    ``nn.SyncBatchNorm``. In eval mode, or without a process group of several ranks, it is
    ``BatchNorm``. ``convert_sync_batchnorm(model)`` swaps a model's BatchNorm layers for it."""

    expected_ndim = (2, 3, 4, 5)
    _normalize = staticmethod(sync_batch_norm)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, device=None, dtype=None):
        if process_group is not None:
            raise NotImplementedError("SyncBatchNorm: only the default process group (process_group=None) "
                                      "is supported")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """``module`` with every BatchNorm layer replaced by a SyncBatchNorm holding the same
        parameters, buffers and mode (a BatchNorm ``module`` itself gives a new layer)."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            sync = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                       process_group)
            for name in ("weight", "bias"):
                if getattr(module, name) is not None:
                    setattr(sync, name, getattr(module, name))
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(sync, name, getattr(module, name))
            sync.train(module.training)
            return sync
        for name, child in list(module.named_children()):
            setattr(module, name, cls.convert_sync_batchnorm(child, process_group))
        return module
