"""Layer normalisation over the rows of a C-contiguous [R, D] array (kernels/layer_norm.cuh): its
NumPy twin, and the argument checks and launch sequence that the CuPy and native bindings share.

Forward returns ``(y, mean, rstd)``, the statistics per row in the accumulate dtype (float32 for
float16, else the input's); backward returns ``(gx, gweight, gbias)``, the parameter gradients
(None unless asked for) as column sums over the rows, accumulated in the accumulate dtype and then
cast to the input's. Arithmetic follows the kernel: biased variance around the row mean (two passes),
``rstd = 1 / sqrt(var + eps)``, ``y = (x - mean) * rstd * weight + bias``.
"""
import numpy as np

from gpudl.backend import FLOAT_DTYPES
from gpudl.backend.kernel_specs import ACC_DTYPE


def check_arguments(x, weight=None, bias=None, gy=None):
    """Raise a clear error for arrays the kernels cannot take (shared by every backend)."""
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"layer_norm: expected a float16/float32/float64 input, got {x.dtype}")
    if x.ndim != 2 or not x.flags.c_contiguous:
        raise ValueError(f"layer_norm: the kernels take a C-contiguous [rows, features] array, got shape "
                         f"{x.shape} and strides {x.strides}")
    for name, a, shape in (("weight", weight, x.shape[1:]), ("bias", bias, x.shape[1:]), ("gradient", gy, x.shape)):
        if a is not None and (a.shape != shape or a.dtype != x.dtype or not a.flags.c_contiguous):
            raise ValueError(f"layer_norm: {name} of shape {a.shape} and dtype {a.dtype} does not match the input "
                             f"{x.shape} {x.dtype} (expected shape {shape}, C-contiguous)")


def _acc_dtype(x):
    return np.dtype(ACC_DTYPE[x.dtype.name])


def launch_forward(kernel, xp, x, weight, bias, eps):
    """Run the forward kernel (a CuPy or native kernel object, array module ``xp``) over the rows
    of ``x``; return ``(y, mean, rstd)``."""
    check_arguments(x, weight, bias)
    rows, cols = x.shape
    acc = _acc_dtype(x)
    y = xp.empty_like(x)
    mean, rstd = xp.empty(rows, dtype=acc), xp.empty(rows, dtype=acc)
    if x.size:
        flat = x.reshape(-1)  # also stands for an absent weight or bias: never read then
        kernel(flat, flat if weight is None else weight, flat if bias is None else bias, weight is not None,
               bias is not None, cols, float(eps), y.reshape(-1), mean, rstd, size=rows)
    return y, mean, rstd


def launch_backward(kernel, xp, x, gy, weight, mean, rstd, weight_grad=True, bias_grad=True, rows_per_block=1):
    """Run the backward kernel over blocks of ``rows_per_block`` rows of ``gy``; return ``(gx,
    gweight, gbias)``, the parameter gradients the sums of the blocks' partial column sums (None
    where not asked for)."""
    check_arguments(x, weight, gy=gy)
    rows, cols = x.shape
    acc = _acc_dtype(x)
    gx = xp.empty_like(x)
    param_grads = bool(weight_grad or bias_grad)
    blocks = -(-rows // rows_per_block)
    parts = [xp.empty((blocks, cols) if param_grads else 1, dtype=acc) for _ in range(2)]
    if x.size:
        flat = x.reshape(-1)
        kernel(flat, gy.reshape(-1), flat if weight is None else weight, mean, rstd, weight is not None,
               param_grads, rows, cols, rows_per_block, gx.reshape(-1), *(p.reshape(-1) for p in parts), size=blocks)
    return gx, _column_sums(parts[0], x.dtype, weight_grad), _column_sums(parts[1], x.dtype, bias_grad)


def _column_sums(rows, dtype, wanted):
    """The sum over the rows of ``rows`` (accumulated in its dtype) as ``dtype``; None unless ``wanted``."""
    return rows.sum(axis=0).astype(dtype, copy=False) if wanted else None


def layer_norm_forward(x, weight=None, bias=None, eps=1e-5):
    """Normalise each row of ``x`` [R, D] (C-contiguous) to zero mean and unit (biased) variance,
    then scale by ``weight`` and shift by ``bias`` ([D] each, or None); return ``(y, mean, rstd)``."""
    check_arguments(x, weight, bias)
    acc = _acc_dtype(x)
    xa = x.astype(acc, copy=False)
    mean = xa.mean(axis=1, dtype=acc)
    centered = xa - mean[:, None]
    var = np.square(centered).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rstd = 1 / np.sqrt(var + acc.type(eps))
    y = centered
    y *= rstd[:, None]
    if weight is not None:
        y *= weight.astype(acc, copy=False)
    if bias is not None:
        y += bias.astype(acc, copy=False)
    return y.astype(x.dtype, copy=False), mean, rstd


def layer_norm_backward(x, gy, weight, mean, rstd, weight_grad=True, bias_grad=True):
    """``(gx, gweight, gbias)`` of :func:`layer_norm_forward` for the output gradient ``gy``, from
    the saved ``mean`` and ``rstd``; the parameter gradients None unless asked for."""
    check_arguments(x, weight, gy=gy)
    acc = _acc_dtype(x)
    xhat = x.astype(acc) - mean[:, None]
    xhat *= rstd[:, None]
    g = gy.astype(acc)
    if weight is not None:
        g *= weight.astype(acc, copy=False)
    mean_g = g.mean(axis=1, keepdims=True)
    mean_gxhat = np.einsum("rd,rd->r", g, xhat)[:, None] / acc.type(x.shape[1])
    gx = g - mean_g
    gx -= xhat * mean_gxhat
    gx *= rstd[:, None]
    return (gx.astype(x.dtype, copy=False), _column_sums(xhat * gy, x.dtype, weight_grad),
            _column_sums(gy.astype(acc, copy=False), x.dtype, bias_grad))


def host_rows_per_block(rows, cols):
    """Rows a backward thread takes on the host: 64, so the partial column sums are 1/64 of the input."""
    return 64


GPU_PARTIALS_MAX = 1 << 22  # values in each partial column-sum array on the GPU (16 MiB in float32)


def gpu_rows_per_block(rows, cols):
    """Rows a backward thread takes on the GPU: one (a thread per row) while the partial column sums
    stay within ``GPU_PARTIALS_MAX`` values, as many more as keep them there beyond."""
    return max(1, -(-rows * cols // GPU_PARTIALS_MAX))


def bind(kernel, xp, rows_per_block):
    """``(layer_norm_forward, layer_norm_backward)`` with the twins' signatures, run by the kernels
    of one runner: ``kernel(name)`` gives the CuPy or native kernel, ``xp`` is its array module,
    ``rows_per_block(rows, cols)`` the rows one backward thread takes (:func:`host_rows_per_block`,
    :func:`gpu_rows_per_block`)."""
    def forward(x, weight=None, bias=None, eps=1e-5):
        return launch_forward(kernel("layer_norm_forward"), xp, x, weight, bias, eps)

    def backward(x, gy, weight, mean, rstd, weight_grad=True, bias_grad=True):
        return launch_backward(kernel("layer_norm_backward"), xp, x, gy, weight, mean, rstd, weight_grad, bias_grad,
                               rows_per_block(*x.shape))

    forward.__doc__, backward.__doc__ = layer_norm_forward.__doc__, layer_norm_backward.__doc__
    return forward, backward
