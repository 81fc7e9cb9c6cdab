"""Batch and layer normalisation. Batch norm: one Function that normalises over some axes and
applies an affine map whose parameters broadcast over the others. Layer norm: the fused row
kernels of kernels/layer_norm.cuh. Statistics of float16 inputs are accumulated in float32."""
import math

from ..autograd.function import Function
from ..tensor import Tensor
from ._util import accumulation_dtype


class Normalize(Function):
    """``(x - mean) / sqrt(var + eps) * weight + bias``.

    ``kind`` names the op in profiles (``BatchNorm``). ``stats_axes``: the axes
    mean and (biased) variance run over. With ``stats=(mean, var)`` (arrays shaped like the
    parameters) those are used instead and are constants for backward (batch norm in eval mode). ``param_shape`` is the shape weight and bias are viewed as to
    broadcast against x; ``param_axes`` are the axes their gradients are summed over. After
    forward, ``batch_mean`` and ``batch_var`` hold the statistics computed from the input.
    """

    def __init__(self, kind, stats_axes, param_shape, param_axes, eps, stats=None):
        self.kind, self.stats_axes, self.param_shape, self.param_axes = kind, stats_axes, param_shape, param_axes
        self.eps, self.stats = eps, stats

    @property
    def op_name(self):
        """``BatchNorm`` (or the ``kind`` given) in profiles."""
        return self.kind

    def axis_mean(self, array, dtype=None):
        """Mean over the statistics axes, kept as size-1 axes (SyncBatchNorm's averages over all ranks)."""
        return array.mean(axis=self.stats_axes, keepdims=True, dtype=dtype)

    def forward(self, x, weight, bias):
        xp = self.xp
        acc = accumulation_dtype(x.dtype) or x.dtype
        if self.stats is None:
            mean = self.axis_mean(x, acc)
            centered = xp.subtract(x, mean, dtype=acc)
            var = self.axis_mean(xp.square(centered))
            self.batch_mean, self.batch_var = mean, var
        else:
            mean, var = (s.reshape(self.param_shape).astype(acc) for s in self.stats)
            centered = xp.subtract(x, mean, dtype=acc)
        inv_std = 1 / xp.sqrt(var + self.eps)
        normalized = centered
        normalized *= inv_std
        out = normalized * weight.reshape(self.param_shape) if weight is not None else normalized.copy()
        if bias is not None:
            out += bias.reshape(self.param_shape)
        self.saved = (normalized, inv_std, weight)
        return out.astype(x.dtype, copy=False)

    def backward(self, grad):
        normalized, inv_std, weight = self.saved
        xp = self.xp
        g = grad.astype(normalized.dtype, copy=False)
        gx = gw = gb = None
        if self.needs_input_grad[1]:
            gw = (g * normalized).sum(axis=self.param_axes)  # summing param_axes leaves the parameter's shape
        if self.needs_input_grad[2]:
            gb = g.sum(axis=self.param_axes)
        if self.needs_input_grad[0]:
            g_normalized = g * weight.reshape(self.param_shape) if weight is not None else g
            if self.stats is None:
                # d/dx of (x - mean) * inv_std, with mean and var depending on x
                projection = self.axis_mean(g_normalized * normalized)
                gx = g_normalized - self.axis_mean(g_normalized)
                gx -= normalized * projection
                gx *= inv_std
            else:
                gx = g_normalized * inv_std
        return gx, gw, gb


def _check_param(op, name, tensor, shape, input):
    if tensor is None:
        return
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)}, got {tensor.shape}")
    if tensor.dtype != input.dtype:
        raise TypeError(f"{op}: input has dtype {input.dtype} but {name} has dtype {tensor.dtype}")


def check_batch_norm_inputs(op, input, running_mean, running_var, weight, bias):
    """Validate batch norm's arguments; return the statistics axes and the parameters' broadcast shape."""
    if input.ndim < 2:
        raise ValueError(f"{op}: expected an input [N, C, *] with at least 2 dimensions, got shape {input.shape}")
    channels = input.shape[1]
    for name, tensor in (("weight", weight), ("bias", bias)):
        _check_param(op, name, tensor, (channels,), input)
    for name, tensor in (("running_mean", running_mean), ("running_var", running_var)):
        if tensor is not None and tuple(tensor.shape) != (channels,):
            raise ValueError(f"{op}: {name} must have shape ({channels},), got {tensor.shape}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: give both running_mean and running_var, or neither")
    return (0,) + tuple(range(2, input.ndim)), (1, channels) + (1,) * (input.ndim - 2)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch normalisation over axis 1 of input [N, C, *] (PyTorch's ``F.batch_norm``).

    ``training=True`` normalises with the batch statistics (biased variance) and, if running
    statistics are given, updates them in place: ``running = (1 - momentum) * running +
    momentum * batch``, using the unbiased variance for ``running_var``. ``momentum`` may be a
    Python number or a 0-d tensor (a factor computed on the device, as batch norm's cumulative
    average does). ``training=False`` normalises with the running statistics.
    """
    op = "batch_norm"
    axes, param_shape = check_batch_norm_inputs(op, input, running_mean, running_var, weight, bias)
    channels = input.shape[1]
    if not training:
        if running_mean is None:
            raise ValueError(f"{op}: running_mean and running_var are needed when training=False")
        fn = Normalize("BatchNorm", axes, param_shape, axes, eps, stats=(running_mean.data, running_var.data))
        return fn.apply(input, weight, bias)
    count = input.size // channels
    if count <= 1:
        raise ValueError(f"{op}: expected more than 1 value per channel when training, got input of shape "
                         f"{input.shape}")
    return apply_training(Normalize("BatchNorm", axes, param_shape, axes, eps), input, weight, bias, running_mean,
                          running_var, momentum, count)


def apply_training(fn, input, weight, bias, running_mean, running_var, momentum, count):
    """Run the batch-statistics Normalize ``fn`` and update the running statistics (if given), the
    variance made unbiased with ``count``, the number of values per channel the statistics ran over."""
    out = fn.apply(input, weight, bias)
    if running_mean is not None:
        factor = momentum.data if isinstance(momentum, Tensor) else momentum
        _update_running(running_mean, fn.batch_mean, factor)
        _update_running(running_var, fn.batch_var * (count / (count - 1)), factor)
    return out


def _update_running(running, batch, factor):
    """``running = (1 - factor) * running + factor * batch`` in place, without a host sync."""
    update = (batch.reshape(running.shape) * factor).astype(running.dtype, copy=False)
    running.mul_(1 - factor)
    running.add_(Tensor(update))


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer normalisation over the trailing ``normalized_shape`` dimensions (PyTorch's ``F.layer_norm``)."""
    op = "layer_norm"
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(normalized_shape)
    if k == 0 or input.ndim < k or tuple(input.shape[input.ndim - k:]) != normalized_shape:
        raise ValueError(f"{op}: input of shape {input.shape} does not end in normalized_shape {normalized_shape}")
    for name, tensor in (("weight", weight), ("bias", bias)):
        _check_param(op, name, tensor, normalized_shape, input)
    return LayerNorm(normalized_shape, eps).apply(input, weight, bias)


class LayerNorm(Function):
    """Layer normalisation of x seen as rows of ``prod(normalized_shape)`` values (the trailing
    dimensions flattened), by the fused row kernels of ``backend.fused`` (kernels/layer_norm.cuh):
    one launch forward (saving each row's mean and 1 / std), one backward, plus the column sums of
    the parameter gradients."""

    private_grads = True  # fresh kernel outputs and column sums

    def __init__(self, normalized_shape, eps):
        self.normalized_shape, self.eps = normalized_shape, eps
        self.features = math.prod(normalized_shape)

    def _rows(self, array):
        """``array`` as the C-contiguous [rows, features] array the kernels take (a view if it can)."""
        rows = math.prod(array.shape[:array.ndim - len(self.normalized_shape)])
        return self.xp.ascontiguousarray(array).reshape(rows, self.features)

    def _flat(self, param):
        return None if param is None else self.xp.ascontiguousarray(param).reshape(self.features)

    def forward(self, x, weight, bias):
        rows = self._rows(x)
        flat_weight = self._flat(weight)
        y, mean, rstd = self.backend.fused.layer_norm_forward(rows, flat_weight, self._flat(bias), self.eps)
        # x and weight themselves are saved too, so that modifying either in place before backward is caught
        self.saved = (x, weight, rows, flat_weight, mean, rstd)
        return y.reshape(x.shape)

    def backward(self, grad):
        x, _, rows, flat_weight, mean, rstd = self.saved
        needs_x, needs_weight, needs_bias = self.needs_input_grad
        gx, gw, gb = self.backend.fused.layer_norm_backward(rows, self._rows(grad), flat_weight, mean, rstd,
                                                            weight_grad=needs_weight, bias_grad=needs_bias)
        return (gx.reshape(x.shape) if needs_x else None,
                None if gw is None else gw.reshape(self.normalized_shape),
                None if gb is None else gb.reshape(self.normalized_shape))
