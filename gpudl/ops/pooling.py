"""Max and average pooling over 2-D windows, as elementwise ops over the k² strided views of the
input (one view per window tap), never a loop over pixels."""
from ..autograd.function import Function
from ..autograd.grad_mode import grad_mode
from ..backend.buffer_pool import POOL
from ._util import accumulation_dtype
from .conv import TO_BATCH_LAST, TO_NCHW, batch_last_padded, output_size, pair, positive_pair, window_tap


class _Pool2d(Function):
    """What max and average pooling share: the padded input, the window taps, the gradient buffer."""

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

    def _padded_gradient(self, dtype, zeroed=True):
        """An array shaped like the padded input [N, C, Hp, Wp], stored batch-last like a conv layer's
        data: zeros, or (``zeroed=False``, for callers that write every element) uninitialised."""
        top, bottom, left, right = self.pads
        n, c, h, w = self.x_shape
        make = self.xp.zeros if zeroed else self.xp.empty
        return make((c, h + top + bottom, w + left + right, n), dtype=dtype).transpose(TO_NCHW)

    def _tiling(self):
        """True when the windows cover the padded input exactly once (e.g. 2x2 windows, stride 2, even size)."""
        padded = (self.x_shape[2] + self.pads[0] + self.pads[1], self.x_shape[3] + self.pads[2] + self.pads[3])
        return all(self.dilation[a] == 1 and self.stride[a] == self.kernel[a] and self.out_hw[a] * self.stride[a]
                   == padded[a] for a in (0, 1))

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


class MaxPool2d(_Pool2d):
    """Max over each window; padding counts as -inf. The gradient goes to the first maximum of a
    window in row-major window order (as PyTorch), so tied inputs never share it.

    With ``keep_index`` forward records which tap won each window (a strict ``>`` keeps the first
    of equal values), so backward needs neither the input nor a comparison with the output.
    """

    def __init__(self, kernel, stride, pads, dilation, out_hw, keep_index):
        super().__init__(kernel, stride, pads, dilation, out_hw)
        self.keep_index = keep_index

    def forward(self, x):
        xp = self.xp
        self.x_shape = x.shape
        source = self._padded(x, -float("inf"))
        taps = self._taps()
        out = source[next(taps)].copy(order="K")
        index = None
        if self.keep_index:  # *_like: the same memory order as out; the scratch is reused for every tap
            index = xp.zeros_like(out, dtype="int8" if self.kernel[0] * self.kernel[1] < 128 else "int32")
            improved, candidate = xp.empty_like(out, dtype=bool), xp.empty_like(index)
        for k, tap in enumerate(taps, 1):
            window = source[tap]
            if index is not None:  # taps come in increasing k, so the last strict improvement is a max
                xp.greater(window, out, out=improved)
                xp.maximum(index, xp.multiply(improved, index.dtype.type(k), out=candidate), out=index)
            xp.maximum(out, window, out=out)
        self._give_back()
        self.index = index
        return out

    def backward(self, grad):
        xp = self.xp
        grad = self._batch_last(grad)
        gpad = self._padded_gradient(grad.dtype, zeroed=not self._tiling())
        overlapping = any(s < self.dilation[a] * (self.kernel[a] - 1) + 1 for a, s in enumerate(self.stride))
        mask = xp.empty_like(self.index, dtype=bool)
        for k, tap in enumerate(self._taps()):
            target = gpad[tap]
            xp.equal(self.index, k, out=mask)
            if overlapping:
                xp.add(target, grad * mask, out=target)
            else:  # each input element is in at most one window: write instead of add
                xp.multiply(grad, mask, out=target)
        return self._crop(gpad)


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


def _pool_args(op, input, kernel_size, stride, padding, dilation):
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
    return kernel, stride, pads, dilation, output_size(op, input.shape[2:], kernel, stride, pads, dilation)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1):
    """Max pooling (PyTorch's ``F.max_pool2d``): input [N, C, H, W] or [C, H, W]; ``stride``
    defaults to ``kernel_size``; padding (at most half the kernel) counts as -inf."""
    if input.ndim == 3:
        return max_pool2d(input.unsqueeze(0), kernel_size, stride, padding, dilation).squeeze(0)
    kernel, stride, pads, dilation, out_hw = _pool_args("max_pool2d", input, kernel_size, stride, padding, dilation)
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
