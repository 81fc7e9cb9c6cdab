"""Max pooling over 2-D windows (kernels/pooling.cuh): the NumPy twins, and the argument checks and
launch sequences that the CuPy and native bindings share.

``max_pool2d_forward(x, kernel, stride, pads, dilation, out_hw, keep_index)`` takes ``x`` of the
logical shape [N, C, H, W] with any strides and returns ``(y, index)``, both C-contiguous
[C, OH, OW, N] (batch-last, as a conv layer's data): the window maxima and, with ``keep_index``,
the winning tap ``ki * KW + kj`` of each window (int8 below 128 taps, else int32; None without).
``max_pool2d_backward(gy, index, x_shape, kernel, stride, pads, dilation)`` takes the output
gradient [C, OH, OW, N] and returns the input gradient, C-contiguous [C, H, W, N]. ``pads`` is
``(top, bottom, left, right)``.

PyTorch's semantics: taps in the padding are never candidates; in row-major tap order the first
real tap is taken and a later one replaces it when greater or NaN (the first of tied maxima wins,
the last NaN wins and is recorded). The input gradient of an element sums, in tap order and in the
input's dtype (each addition rounded to it), the gradients of the windows whose recorded tap read
it; the twins take the same steps in the same order, so they match the kernels bit for bit.
"""
import numpy as np

from gpudl.backend import FLOAT_DTYPES
from gpudl.backend.conv_kernels import TO_BATCH_LAST, window_geometry, window_taps


# The host kernels take up to this many elements along N per index (kernels/pooling.cuh): long
# enough for their 16-lane vector loops, short enough that a small layer still splits across threads.
HOST_RUN = 64


def host_run(n):
    """The run per index of the host kernels for batch ``n``."""
    return min(n, HOST_RUN)


def _indices(shape, run):
    """The launch size over a C-contiguous [C, rows, columns, N] array: runs of ``run`` along N per
    position, the last of each position shorter when ``run`` does not divide N."""
    return (shape[0] * shape[1] * shape[2]) * -(-shape[3] // run)


def index_dtype(kernel):
    """The dtype of the recorded taps: int8 when a window has fewer than 128 taps, else int32."""
    return np.dtype("int8" if kernel[0] * kernel[1] < 128 else "int32")


def output_size(x_shape, kernel, stride, pads, dilation, ceil_mode=False):
    """``(OH, OW)`` as PyTorch's pooling: the number of window positions that fit the padded input,
    or with ``ceil_mode`` also a last partial one, as long as it starts inside the input or the
    leading padding."""
    sizes = []
    for size, before, after, d, k, s in ((x_shape[2], pads[0], pads[1], dilation[0], kernel[0], stride[0]),
                                         (x_shape[3], pads[2], pads[3], dilation[1], kernel[1], stride[1])):
        span = size + before + after - d * (k - 1) - 1
        out = (span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= size + before:
            out -= 1
        sizes.append(out)
    return tuple(sizes)


def check_arguments(op, x_shape, dtype, kernel, stride, pads, dilation, out_hw, gy=None, index=None):
    """Raise a clear error for arguments the kernels cannot take (shared by every backend)."""
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{op}: expected a float16/float32/float64 input, got {dtype}")
    if len(x_shape) != 4:
        raise ValueError(f"{op}: expected an input of logical shape [N, C, H, W], got {tuple(x_shape)}")
    expected = output_size(x_shape, kernel, stride, pads, dilation)
    if tuple(out_hw) not in (expected, output_size(x_shape, kernel, stride, pads, dilation, True)) or min(out_hw) < 1:
        raise ValueError(f"{op}: output size {tuple(out_hw)} does not fit an input of shape {tuple(x_shape)} with "
                         f"kernel {tuple(kernel)}, stride {tuple(stride)}, padding {tuple(pads)}, dilation "
                         f"{tuple(dilation)} (output size {expected})")
    n, c = x_shape[:2]
    shape = (c, *out_hw, n)
    if gy is not None and (gy.shape != shape or gy.dtype != dtype):
        raise ValueError(f"{op}: the output gradient must be [C, OH, OW, N] = {shape} of dtype {dtype}, got "
                         f"{gy.shape} {gy.dtype}")
    if index is not None and (index.shape != shape or index.dtype != index_dtype(kernel)):
        raise ValueError(f"{op}: the recorded taps must be [C, OH, OW, N] = {shape} of dtype "
                         f"{index_dtype(kernel)}, got {index.shape} {index.dtype}")


def _tap_slices(x_shape, kernel, stride, pads, dilation, out_hw):
    """Per tap ``(ki, kj)`` that reads any input, in order: ``(k, output slices, input slices)``,
    each slicing the leading [C, rows, columns] of a batch-last array."""
    n, c = x_shape[:2]
    for to, of in window_taps(x_shape, (c, *kernel, *out_hw, n), stride, pads, dilation):
        yield to[1] * kernel[1] + to[2], (slice(None), to[3], to[4]), of


def max_pool2d_forward(x, kernel, stride, pads, dilation, out_hw, keep_index):
    """``(y, index)`` of max pooling ``x`` [N, C, H, W] (NumPy twin of the forward kernel: one
    strided compare-and-copy per window tap)."""
    check_arguments("max_pool2d", x.shape, x.dtype, kernel, stride, pads, dilation, out_hw)
    n, c = x.shape[:2]
    source = x.transpose(TO_BATCH_LAST)
    y = np.empty((c, *out_hw, n), dtype=x.dtype)
    index = np.empty(y.shape, dtype=index_dtype(kernel))
    taken = np.zeros((1, *out_hw, 1), dtype=bool)  # windows that have seen a real tap
    for k, to, of in _tap_slices(x.shape, kernel, stride, pads, dilation, out_hw):
        value, best = source[of], y[to]
        with np.errstate(invalid="ignore"):
            take = (value > best) | np.isnan(value) | ~taken[to]
        np.copyto(best, value, where=take)
        np.copyto(index[to], k, where=take)
        taken[to] = True
    return y, (index if keep_index else None)


def max_pool2d_backward(gy, index, x_shape, kernel, stride, pads, dilation):
    """The input gradient [C, H, W, N] of max pooling (NumPy twin of the backward kernel: one
    strided masked add per window tap)."""
    check_arguments("max_pool2d backward", x_shape, gy.dtype, kernel, stride, pads, dilation, gy.shape[1:3],
                    gy, index)
    n, c, h, w = x_shape
    gx = np.zeros((c, h, w, n), dtype=gy.dtype)
    for k, to, of in _tap_slices(x_shape, kernel, stride, pads, dilation, gy.shape[1:3]):
        target = gx[of]
        np.add(target, np.where(index[to] == k, gy[to], gy.dtype.type(0)), out=target)
    return gx


def launch_forward(kernel_object, xp, run_length, x, kernel, stride, pads, dilation, out_hw, keep_index):
    """``(y, index)`` by one launch of the forward kernel (a CuPy or native kernel object; ``xp``
    its array module; ``run_length(N)`` the elements along N each index covers at most). An input not laid
    out batch-last (a first layer's NCHW data) is copied so first, as im2col does."""
    check_arguments("max_pool2d", x.shape, x.dtype, kernel, stride, pads, dilation, out_hw)
    n, c = x.shape[:2]
    y = xp.empty((c, *out_hw, n), dtype=x.dtype)
    index = xp.empty(y.shape if keep_index else 1, dtype=index_dtype(kernel))  # a dummy without keep_index
    if y.size:
        run = run_length(n)
        source = xp.ascontiguousarray(x.transpose(TO_BATCH_LAST))  # a view when already batch-last
        geometry = window_geometry(run, x.shape, (c, *kernel, *out_hw, n), stride, pads, dilation)
        kernel_object(source.reshape(-1), *geometry, bool(keep_index), y.reshape(-1), index.reshape(-1),
                      size=_indices(y.shape, run))
    return y, (index if keep_index else None)


def launch_backward(kernel_object, xp, run_length, gy, index, x_shape, kernel, stride, pads, dilation):
    """The input gradient [C, H, W, N] by one launch of the backward kernel (arguments as
    :func:`launch_forward`; ``gy`` is made C-contiguous if it is not)."""
    check_arguments("max_pool2d backward", x_shape, gy.dtype, kernel, stride, pads, dilation, gy.shape[1:3],
                    gy, index)
    n, c, h, w = x_shape
    gx = xp.empty((c, h, w, n), dtype=gy.dtype)
    if gx.size:
        run = run_length(n)
        kernel_object(xp.ascontiguousarray(gy).reshape(-1), index.reshape(-1),
                      *window_geometry(run, x_shape, (c, *kernel, *gy.shape[1:3], n), stride, pads, dilation),
                      gx.reshape(-1), size=_indices(gx.shape, run))
    return gx


def bind(kernel_of, xp, run_length):
    """``(max_pool2d_forward, max_pool2d_backward)`` with the twins' signatures, run by the kernels of
    one runner: ``kernel_of(name)`` gives the CuPy or native kernel, ``xp`` is its array module and
    ``run_length(N)`` the elements each index covers at most (1 on the GPU, :func:`host_run`)."""
    def forward(x, kernel, stride, pads, dilation, out_hw, keep_index):
        return launch_forward(kernel_of("max_pool2d_forward"), xp, run_length, x, kernel, stride, pads, dilation,
                              out_hw, keep_index)

    def backward(gy, index, x_shape, kernel, stride, pads, dilation):
        return launch_backward(kernel_of("max_pool2d_backward"), xp, run_length, gy, index, x_shape, kernel,
                               stride, pads, dilation)

    forward.__doc__, backward.__doc__ = max_pool2d_forward.__doc__, max_pool2d_backward.__doc__
    return forward, backward
