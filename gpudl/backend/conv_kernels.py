"""im2col and col2im of a 2-D convolution (kernels/conv.cuh): their NumPy twins, and the argument
checks and launch sequences that the CuPy and native bindings share.

``im2col(x, cols, stride, pads, dilation)`` writes the windows of ``x`` (logical [N, C, H, W],
any strides) into the C-contiguous columns ``cols`` [C, KH, KW, OH, OW, N], zeros where a tap
falls into the padding; ``col2im(gcols, x_shape, stride, pads, dilation)`` returns the input
gradient, C-contiguous [C, H, W, N] (batch-last), each element the sum of the column entries that
read it, taken in tap order (ki, kj) in the accumulate dtype (float32 for float16) and rounded
once. ``pads`` is ``(top, bottom, left, right)``; the kernel size and output size come from the
columns' shape. The twins compute the same sums in the same order, so they match the kernels bit
for bit.
"""
import numpy as np

from gpudl.backend import FLOAT_DTYPES
from gpudl.backend.kernel_specs import ACC_DTYPE

TO_BATCH_LAST = (1, 2, 3, 0)  # logical [N, C, H, W] -> memory order [C, H, W, N]
TO_NCHW = (3, 0, 1, 2)        # and back


def check_arguments(op, x_shape, cols, stride, pads, dilation, x=None):
    """Raise a clear error for arguments the kernels cannot take (shared by every backend)."""
    if cols.dtype not in FLOAT_DTYPES or (x is not None and x.dtype != cols.dtype):
        raise TypeError(f"{op}: expected float16/float32/float64 arrays of one dtype, got "
                        f"{cols.dtype}" + ("" if x is None else f" and {x.dtype}"))
    n, c, h, w = x_shape
    if cols.ndim != 6 or not cols.flags.c_contiguous or cols.shape[0] != c or cols.shape[5] != n:
        raise ValueError(f"{op}: the columns must be a C-contiguous [C, KH, KW, OH, OW, N] array with "
                         f"C={c} and N={n} (input shape {tuple(x_shape)}), got shape {cols.shape} and "
                         f"strides {cols.strides}")
    kh, kw, oh, ow = cols.shape[1:5]
    expected = tuple((size + a + b - d * (k - 1) - 1) // s + 1 for size, a, b, d, k, s in
                     ((h, pads[0], pads[1], dilation[0], kh, stride[0]),
                      (w, pads[2], pads[3], dilation[1], kw, stride[1])))
    if expected != (oh, ow):
        raise ValueError(f"{op}: columns of output size {(oh, ow)} do not fit an input of shape {tuple(x_shape)} "
                         f"with kernel {(kh, kw)}, stride {tuple(stride)}, padding {tuple(pads)}, dilation "
                         f"{tuple(dilation)} (output size {expected})")


def window_geometry(run, x_shape, cols_shape, stride, pads, dilation):
    """The scalar arguments ``kernel_specs.CONV_GEOMETRY`` of the im2col, col2im and max-pool kernels, in order."""
    n, _, h, w = x_shape
    _, kh, kw, oh, ow, _ = cols_shape
    return (run, n, h, w, kh, kw, oh, ow, stride[0], stride[1], pads[0], pads[2], dilation[0], dilation[1])


def launch_im2col(kernel, xp, run_length, x, cols, stride, pads, dilation):
    """Fill ``cols`` from ``x`` with one launch of the im2col kernel (a CuPy or native kernel
    object; ``run_length(N, OW, elements)`` is the run per index it takes); return ``cols``.
    An input not laid out batch-last is copied so first: gathering its batch with a stride costs
    more than the copy (NCHW at the bench CNN's first layer, batch 128: 0.38 ms against 0.15 ms)."""
    check_arguments("im2col", x.shape, cols, stride, pads, dilation, x)
    if cols.size:
        run = run_length(x.shape[0], cols.shape[4], cols.size)
        source = xp.ascontiguousarray(x.transpose(TO_BATCH_LAST))  # a view when already batch-last
        kernel(source.reshape(-1), *window_geometry(run, x.shape, cols.shape, stride, pads, dilation), cols.reshape(-1),
               size=cols.size // run)
    return cols


def launch_col2im(kernel, xp, run_length, gcols, x_shape, stride, pads, dilation):
    """The input gradient [C, H, W, N] of the column gradient ``gcols``, by one launch of the
    col2im kernel (arguments as :func:`launch_im2col`)."""
    check_arguments("col2im", x_shape, gcols, stride, pads, dilation)
    n, c, h, w = x_shape
    gx = xp.empty((c, h, w, n), dtype=gcols.dtype)
    if gx.size:
        run = run_length(n, w, gx.size)
        kernel(gcols.reshape(-1), *window_geometry(run, x_shape, gcols.shape, stride, pads, dilation), gx.reshape(-1),
               size=gx.size // run)
    return gx


# The shortest run per index worth splitting a host loop across threads for: shorter runs cost
# more in index arithmetic than a second thread gains (measured at the bench CNN's shapes).
MIN_PARALLEL_RUN = 256


def host_run(n, width, elements, parallel_min):
    """The run per index of the host kernels: ``n`` times the largest divisor of the rows'
    ``width`` (OW or W) that still leaves ``parallel_min`` indices (the native loops' threshold
    for using every thread) with runs of ``MIN_PARALLEL_RUN`` elements or more; else whole rows
    (one thread, the least index arithmetic)."""
    for d in range(width, 0, -1):
        if width % d == 0 and n * d >= MIN_PARALLEL_RUN and elements // (n * d) >= parallel_min:
            return n * d
    return n * width


def _tap_span(k, pad, dilation, stride, size, out):
    """``(lo, hi, first)``: along one axis, the outputs ``lo <= o < hi`` whose tap ``k`` reads an
    input inside ``[0, size)``, and the input the first of them reads."""
    offset = k * dilation - pad
    lo = -(offset // stride)  # ceil(-offset / stride): the first o with o*stride + offset >= 0
    lo = max(lo, 0)
    hi = min(out, (size - 1 - offset) // stride + 1)
    return lo, max(lo, hi), lo * stride + offset


def window_taps(x_shape, cols_shape, stride, pads, dilation):
    """Per tap ``(ki, kj)`` that reads any input: the columns' index and the input's (batch-last)."""
    _, _, h, w = x_shape
    _, kh, kw, oh, ow, _ = cols_shape
    for ki in range(kh):
        a0, a1, ih = _tap_span(ki, pads[0], dilation[0], stride[0], h, oh)
        for kj in range(kw):
            b0, b1, iw = _tap_span(kj, pads[2], dilation[1], stride[1], w, ow)
            if a0 < a1 and b0 < b1:
                yield ((slice(None), ki, kj, slice(a0, a1), slice(b0, b1)),
                       (slice(None), slice(ih, ih + (a1 - a0 - 1) * stride[0] + 1, stride[0]),
                        slice(iw, iw + (b1 - b0 - 1) * stride[1] + 1, stride[1])))


def im2col(x, cols, stride, pads, dilation):
    """Write the windows of ``x`` [N, C, H, W] into ``cols`` [C, KH, KW, OH, OW, N]; return ``cols``
    (NumPy twin of the im2col kernel: one strided copy per kernel tap)."""
    check_arguments("im2col", x.shape, cols, stride, pads, dilation, x)
    if any(pads):
        cols.fill(0)
    source = x.transpose(TO_BATCH_LAST)
    for to, of in window_taps(x.shape, cols.shape, stride, pads, dilation):
        cols[to] = source[of]
    return cols


def col2im(gcols, x_shape, stride, pads, dilation):
    """The input gradient [C, H, W, N] of the column gradient ``gcols`` (NumPy twin of the col2im
    kernel: one strided add per kernel tap into an accumulator of the accumulate dtype)."""
    check_arguments("col2im", x_shape, gcols, stride, pads, dilation)
    n, c, h, w = x_shape
    gx = np.zeros((c, h, w, n), dtype=ACC_DTYPE[gcols.dtype.name])
    for of, to in window_taps(x_shape, gcols.shape, stride, pads, dilation):
        target = gx[to]
        np.add(target, gcols[of], out=target)
    return gx.astype(gcols.dtype, copy=False)


def bind(kernel, xp, run_length):
    """``(im2col, col2im)`` with the twins' signatures, run by the kernels of one runner:
    ``kernel(name)`` gives the CuPy or native kernel, ``xp`` is its array module and
    ``run_length(N, width, elements)`` the elements each index covers (1 on the GPU, :func:`host_run`
    on the host)."""
    def im2col_kernel(x, cols, stride, pads, dilation):
        return launch_im2col(kernel("im2col"), xp, run_length, x, cols, stride, pads, dilation)

    def col2im_kernel(gcols, x_shape, stride, pads, dilation):
        return launch_col2im(kernel("col2im"), xp, run_length, gcols, x_shape, stride, pads, dilation)

    im2col_kernel.__doc__, col2im_kernel.__doc__ = im2col.__doc__, col2im.__doc__
    return im2col_kernel, col2im_kernel
