"""Max and average pooling over 2-D windows: max pooling by one fused kernel each way
(kernels/pooling.cuh), average pooling as elementwise ops over the k² strided views of the input
(one view per window tap), never a loop over pixels."""
from ..autograd.function import Function
from ..autograd.grad_mode import grad_mode
from ..backend.buffer_pool import POOL
from ..backend.pooling_kernels import output_size as pool_output_size
from ._util import accumulation_dtype
from .conv import TO_BATCH_LAST, TO_NCHW, output_size, pair, positive_pair


def window_tap(i, j, out_hw, stride, dilation):
    """Index of tap ``(i, j)`` of every window, for the last two axes of a padded array."""
    return (slice(None), slice(None),
            slice(i * dilation[0], i * dilation[0] + stride[0] * (out_hw[0] - 1) + 1, stride[0]),
            slice(j * dilation[1], j * dilation[1] + stride[1] * (out_hw[1] - 1) + 1, stride[1]))


def batch_last_padded(xp, device, x, pads, fill):
    """``x`` [N, C, H, W] copied into a workspace array laid out [C, H+top+bottom, W+left+right, N]
    whose border holds ``fill``; give it back to the buffer pool when done."""
    n, c, h, w = x.shape
    top, bottom, left, right = pads
    buffer = POOL.take(xp, device, (c, h + top + bottom, w + left + right, n), x.dtype)
    buffer[:, :top] = fill
    buffer[:, top + h:] = fill
    buffer[:, top:top + h, :left] = fill
    buffer[:, top:top + h, left + w:] = fill
    buffer[:, top:top + h, left:left + w] = x.transpose(TO_BATCH_LAST)
    return buffer


class _Pool2d(Function):
    """Average pooling's window geometry: the padded input, the window taps, the gradient buffer."""

    def __init__(self, kernel, stride, pads, dilation, out_hw):
        self.kernel, self.stride, self.pads, self.dilation, self.out_hw = kernel, stride, pads, dilation, out_hw
        self.padded_source = None

    def _padded(self, x, fill):
        """``x`` with its border padded by ``fill`` (x itself without padding), as [N, C, Hp, Wp]."""
        if not any(self.pads):
            return x
        self.padded_source = batch_last_padded(self.xp, self.backend.device_of(x), x, self.pads, fill)
        return self.padded_source.transpose(TO_NCHW)

    def _taps(self):
        for i in range(self.kernel[0]):
            for j in range(self.kernel[1]):
                yield window_tap(i, j, self.out_hw, self.stride, self.dilation)

    def _padded_gradient(self, dtype):
        """Zeros shaped like the padded input [N, C, Hp, Wp], stored batch-last like a conv layer's data."""
        top, bottom, left, right = self.pads
        n, c, h, w = self.x_shape
        return self.xp.zeros((c, h + top + bottom, w + left + right, n), dtype=dtype).transpose(TO_NCHW)

    def _batch_last(self, grad):
        """``grad`` stored batch-last like the gradient buffer its taps are routed into (a copy only if it
        is not, e.g. the gradient of a Linear layer after Flatten): elementwise ops between arrays of
        different memory orders stride across memory and run several times slower (6x measured)."""
        if grad.transpose(TO_BATCH_LAST).flags.c_contiguous:
            return grad
        return self.xp.ascontiguousarray(grad.transpose(TO_BATCH_LAST)).transpose(TO_NCHW)

    def _crop(self, gpad):
        top, _, left, _ = self.pads
        h, w = self.x_shape[2:]
        return gpad[:, :, top:top + h, left:left + w]

    def _give_back(self):
        if self.padded_source is not None:
            POOL.give(self.backend.device_of(self.padded_source), self.padded_source)
            self.padded_source = None


class MaxPool2d(Function):
    """Max over each window by the fused kernels of ``backend.fused`` (kernels/pooling.cuh), with
    PyTorch's semantics: padding is never a candidate, the gradient goes to the first maximum of a
    window in row-major window order (tied inputs never share it), a NaN wins its window.

    With ``keep_index`` forward records which tap won each window, so backward needs neither the
    input nor a comparison with the output.
    """

    def __init__(self, kernel, stride, pads, dilation, out_hw, keep_index):
        self.kernel, self.stride, self.pads, self.dilation, self.out_hw = kernel, stride, pads, dilation, out_hw
        self.keep_index = keep_index

    def forward(self, x):
        self.x_shape = x.shape
        y, self.index = self.backend.fused.max_pool2d_forward(x, self.kernel, self.stride, self.pads, self.dilation,
                                                              self.out_hw, self.keep_index)
        return y.transpose(TO_NCHW)

    def backward(self, grad):
        gx = self.backend.fused.max_pool2d_backward(grad.transpose(TO_BATCH_LAST), self.index, self.x_shape,
                                                    self.kernel, self.stride, self.pads, self.dilation)
        return gx.transpose(TO_NCHW)


class AvgPool2d(_Pool2d):
    """Mean over each window; padding counts as zeros in the divisor when ``count_include_pad``
    (PyTorch's default), else only the real input elements count."""

    def __init__(self, kernel, stride, pads, out_hw, count_include_pad):
        super().__init__(kernel, stride, pads, (1, 1), out_hw)
        self.count_include_pad = count_include_pad

    def forward(self, x):
        xp = self.xp
        self.x_shape = x.shape
        source = self._padded(x, 0)
        taps = self._taps()
        acc = accumulation_dtype(x.dtype)
        out = source[next(taps)].astype(acc or x.dtype)
        for tap in taps:
            xp.add(out, source[tap], out=out)
        self._give_back()
        self.divisor = self._divisor(x.dtype if acc is None else acc)
        out /= self.divisor
        return out.astype(x.dtype, copy=False)

    def _divisor(self, dtype):
        """The number each window's sum is divided by: k², or [OH, OW] counts of real input elements."""
        if self.count_include_pad:
            return dtype.type(self.kernel[0] * self.kernel[1])
        counts = [self._counts(axis, dtype) for axis in (0, 1)]
        return counts[0][:, None] * counts[1][None, :]

    def _counts(self, axis, dtype):
        """How many taps of each window along ``axis`` fall inside the unpadded input."""
        xp = self.xp
        start = xp.arange(self.out_hw[axis]) * self.stride[axis] - self.pads[2 * axis]
        first = xp.maximum(start, 0)
        last = xp.minimum(start + self.kernel[axis], self.x_shape[2 + axis])
        return (last - first).astype(dtype)

    def backward(self, grad):
        xp = self.xp
        gpad = self._padded_gradient(grad.dtype)
        share = (self._batch_last(grad) / self.divisor).astype(grad.dtype, copy=False)
        for tap in self._taps():
            target = gpad[tap]
            xp.add(target, share, out=target)
        return self._crop(gpad)


def _pool_args(op, input, kernel_size, stride, padding, dilation, ceil_mode=False):
    if input.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D input [N, C, H, W] (or 3-D [C, H, W]), got shape {input.shape}")
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: input must be floating point, got {input.dtype}")
    kernel = positive_pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None or stride == [] else positive_pair(stride, "stride", op)
    dilation = positive_pair(dilation, "dilation", op)
    ph, pw = pair(padding, "padding", op)
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if ph < 0 or pw < 0 or 2 * ph > extent[0] or 2 * pw > extent[1]:
        raise ValueError(f"{op}: padding {padding!r} must be non-negative and at most half the kernel size "
                         f"{tuple(kernel)}" + (f" (dilated: {tuple(extent)})" if dilation != (1, 1) else ""))
    pads = (ph, ph, pw, pw)
    out_hw = output_size(op, input.shape[2:], kernel, stride, pads, dilation)  # checks the input is large enough
    if ceil_mode:
        out_hw = pool_output_size(input.shape, kernel, stride, pads, dilation, ceil_mode=True)
    return kernel, stride, pads, dilation, out_hw


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max pooling (PyTorch's ``F.max_pool2d``): input [N, C, H, W] or [C, H, W]; ``stride``
    defaults to ``kernel_size``; padding (at most half the kernel) is never a candidate;
    ``ceil_mode`` adds a last partial window along an axis where one starts inside the input."""
    if input.ndim == 3:
        return max_pool2d(input.unsqueeze(0), kernel_size, stride, padding, dilation, ceil_mode).squeeze(0)
    kernel, stride, pads, dilation, out_hw = _pool_args("max_pool2d", input, kernel_size, stride, padding, dilation,
                                                        ceil_mode)
    keep_index = grad_mode.enabled and input.requires_grad
    return MaxPool2d(kernel, stride, pads, dilation, out_hw, keep_index).apply(input)


def avg_pool2d(input, kernel_size, stride=None, padding=0, *, count_include_pad=True):
    """Average pooling (PyTorch's ``F.avg_pool2d``): input [N, C, H, W] or [C, H, W]; ``stride``
    defaults to ``kernel_size``; zero padding counts in the divisor unless ``count_include_pad=False``."""
    if input.ndim == 3:
        return avg_pool2d(input.unsqueeze(0), kernel_size, stride, padding,
                          count_include_pad=count_include_pad).squeeze(0)
    kernel, stride, pads, _, out_hw = _pool_args("avg_pool2d", input, kernel_size, stride, padding, 1)
    return AvgPool2d(kernel, stride, pads, out_hw, count_include_pad).apply(input)
