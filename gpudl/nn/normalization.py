"""Normalisation layers: ``BatchNorm1d``, ``BatchNorm2d`` and ``LayerNorm``."""
from .. import backend as _backend
from ..factories import ones, zeros
from ..ops.normalization import batch_norm, layer_norm
from ..tensor import Tensor
from .linear import check_size
from .module import Module
from .parameter import Parameter, float_dtype


class _BatchNorm(Module):
    """Batch normalisation over the channel axis 1, with PyTorch's running-statistics rule.

    Training mode normalises with the batch mean and biased variance and updates
    ``running_mean``/``running_var`` (the latter with the unbiased variance) as
    ``(1 - momentum) * running + momentum * batch``; ``momentum=None`` uses the cumulative average
    (factor ``1 / num_batches_tracked``). Eval mode normalises with the running statistics.
    With ``track_running_stats=False`` there are no running statistics and the batch statistics
    are used in both modes. Buffers have the layer's dtype.
    """

    expected_ndim = ()
    _normalize = staticmethod(batch_norm)  # SyncBatchNorm's shares the statistics over ranks

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None):
        super().__init__()
        owner = type(self).__name__
        self.num_features = check_size(num_features, "num_features", owner)
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        dtype = float_dtype(dtype, owner)
        if affine:
            self.weight = Parameter(ones(num_features, dtype=dtype, device=device))
            self.bias = Parameter(zeros(num_features, dtype=dtype, device=device))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, dtype=dtype, device=device))
            self.register_buffer("running_var", ones(num_features, dtype=dtype, device=device))
            self.register_buffer("num_batches_tracked", zeros((), dtype=_backend.int64, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        """Running mean 0, running variance 1, no batches tracked."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def forward(self, x):
        if x.ndim not in self.expected_ndim:
            shapes = " or ".join(f"{n}-D" for n in self.expected_ndim)
            raise ValueError(f"{type(self).__name__}: expected a {shapes} input, got shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}): input of shape {x.shape} has "
                             f"{x.shape[1]} channels on axis 1")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                # computed on the device: reading the counter back would be a host sync per step
                factor = Tensor(1.0 / self.num_batches_tracked.data)
        use_batch_stats = self.training or self.running_mean is None
        return self._normalize(x, self.running_mean if not self.training or self.track_running_stats else None,
                          self.running_var if not self.training or self.track_running_stats else None,
                          self.weight, self.bias, use_batch_stats, factor, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of [N, C] or [N, C, L] inputs over all axes but the channel axis 1."""

    expected_ndim = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of [N, C, H, W] inputs over N, H and W, per channel."""

    expected_ndim = (4,)


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` dimensions (biased variance, ``eps`` inside
    the square root), then scale and shift elementwise by ``weight`` and ``bias`` of that shape."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape = tuple(check_size(n, "normalized_shape", "LayerNorm") for n in shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        dtype = float_dtype(dtype, "LayerNorm")
        if elementwise_affine:
            self.weight = Parameter(ones(self.normalized_shape, dtype=dtype, device=device))
        else:
            self.register_parameter("weight", None)
        if elementwise_affine and bias:
            self.bias = Parameter(zeros(self.normalized_shape, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
