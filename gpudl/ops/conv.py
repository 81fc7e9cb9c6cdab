"""2-D convolution by im2col and one GEMM, plus the argument helpers pooling shares.

Memory layout. A convolution's output is stored batch-last, as [C, H, W, N], and handed out as a
transposed view with PyTorch's logical shape [N, C, H, W]. With im2col columns laid out
[C·kh·kw, OH·OW·N], the three products of a layer are single GEMMs whose results are already
where they belong: the forward ``W @ cols`` *is* the output, the weight gradient is
``g @ cols.T`` and the column gradient ``W.T @ g``, with no transpose copy before or after.
Batch-last also makes every window tap a run of ``OW·N`` contiguous elements (``N`` for strided
windows), so im2col, col2im and the pooling taps stream through memory instead of hopping along
short rows.

im2col and col2im are the fused ops of ``backend.fused`` (kernels/conv.cuh, or their NumPy twins):
im2col reads the unpadded input (the padding is a bounds test, no padded copy) and col2im gathers,
for each input element, the column entries that read it (no zeroed buffer, one write each).
Elementwise ops keep a view's memory order (NumPy's ``order='K'``),
so the next layer, and the gradient coming back, usually arrive in this layout and are read
without copying.

Where the backend has a runner for blocked products (``fused.conv_runner``: the host's compiled
kernels, gpudl.backend.native_conv; groups = 1 and small weights) the columns are never written
whole: each thread lays out and multiplies the columns of a few output positions at a time, the
weight gradient recomputes them from the kept input, and at stride 1 with enough input channels
(``runner.transposes``) the input gradient is the transposed convolution (the flipped kernel over
the output gradient) instead of a column gradient and col2im.
"""
from ..autograd.function import Function
from ..autograd.grad_mode import grad_mode
from ..backend.buffer_pool import POOL
from ..backend.conv_kernels import TO_BATCH_LAST, TO_NCHW
from ..backend.native_conv import geometry
from ._util import accumulation_dtype
from .linear import check_same_dtype, gemm


def pair(value, name, op):
    """``value`` (an int or a pair of ints) as a pair."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")


def output_size(op, in_hw, kernel, stride, pads, dilation):
    """``(OH, OW)`` of a sliding window; an error if the padded input is smaller than the dilated kernel."""
    top, bottom, left, right = pads
    padded = (in_hw[0] + top + bottom, in_hw[1] + left + right)
    extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    if padded[0] < extent[0] or padded[1] < extent[1]:
        raise ValueError(f"{op}: the input's spatial size {tuple(in_hw)} (padded: {padded}) is smaller than the "
                         f"kernel {tuple(kernel)} (with dilation {tuple(dilation)}: {extent})")
    return tuple((p - e) // s + 1 for p, e, s in zip(padded, extent, stride))


class Conv2d(Function):
    """Cross-correlation of x [N, C, H, W] with weight [O, C/groups, kh, kw], plus bias [O]."""

    private_grads = True  # fresh GEMM and sum results, and a view of the fresh col2im result

    def __init__(self, stride, pads, dilation, groups, out_hw, keep_columns):
        self.stride, self.pads, self.dilation, self.groups = stride, pads, dilation, groups
        self.out_hw, self.keep_columns = out_hw, keep_columns
        self.columns = self.source = self.runner = None

    def forward(self, x, weight, bias):
        xp = self.xp
        n, c, h, w = self.x_shape = x.shape
        o, _, kh, kw = weight.shape
        oh, ow = self.out_hw
        self.device = self.backend.device_of(x)
        self.saved = (weight,)
        if self.groups == 1:
            self.runner = self.backend.fused.conv_runner(x.dtype, weight.shape)
        if self.runner is not None:
            source = xp.ascontiguousarray(x.transpose(TO_BATCH_LAST))
            out = xp.empty((o, oh, ow, n), x.dtype)
            self.runner.forward(source, xp.ascontiguousarray(weight.reshape(o, -1)),
                                None if bias is None else xp.ascontiguousarray(bias), out, self._geometry(kh, kw))
            self.source = source if self.keep_columns else None
            return out.transpose(TO_NCHW)
        columns = POOL.take(xp, self.device, (c, kh, kw, oh, ow, n), x.dtype)
        self.backend.fused.im2col(x, columns, self.stride, self.pads, self.dilation)
        g = self.groups
        out = gemm(xp, weight.reshape(g, o // g, -1), columns.reshape(g, weight.size // o, oh * ow * n)).reshape(o, oh, ow, n)
        if bias is not None:
            out += bias.reshape(o, 1, 1, 1)
        if self.keep_columns:
            self.columns = columns
        else:
            POOL.give(self.device, columns)
        return out.transpose(TO_NCHW)

    def _geometry(self, kh, kw):
        return geometry(self.x_shape, (kh, kw), self.out_hw, self.stride, self.pads, self.dilation)

    def backward(self, grad):
        weight, = self.saved
        xp = self.xp
        o = weight.shape[0]
        g = self.groups
        length = grad.size // o
        grad3 = grad.transpose(TO_BATCH_LAST).reshape(g, o // g, length)  # a view in the layout forward made
        gx = gw = gb = None
        if self.runner is not None:
            grad3 = xp.ascontiguousarray(grad3)
        if self.needs_input_grad[1] and self.runner is not None:
            gw = self.runner.weight_grad(self.source, grad3, xp.empty((o, weight.size // o), weight.dtype),
                                         self._geometry(*weight.shape[2:])).reshape(weight.shape)
        elif self.needs_input_grad[1]:
            gw = gemm(xp, grad3, self.columns.reshape(g, weight.size // o, length).transpose(0, 2, 1)).reshape(weight.shape)
        if self.needs_input_grad[2]:
            gb = grad3.reshape(o, length).sum(axis=1, dtype=accumulation_dtype(grad.dtype))
        if self.needs_input_grad[0] and self.runner is not None and self.runner.transposes(self.x_shape, self.stride):
            gx = self._transposed_convolution(grad3, weight)
        elif self.needs_input_grad[0]:
            n, c, _, _ = self.x_shape
            kh, kw = weight.shape[2:]
            gcolumns = POOL.take(xp, self.device, (c, kh, kw) + tuple(self.out_hw) + (n,), grad.dtype)
            gemm(xp, weight.reshape(g, o // g, -1).transpose(0, 2, 1), grad3, out=gcolumns.reshape(g, weight.size // o, length))
            gx = self.backend.fused.col2im(gcolumns, self.x_shape, self.stride, self.pads,
                                           self.dilation).transpose(TO_NCHW)
            POOL.give(self.device, gcolumns)
        return gx, gw, gb

    def _transposed_convolution(self, grad3, weight):
        """The input gradient at stride 1 as a forward convolution of the output gradient [O, OH,
        OW, N] with the kernel flipped, its channels swapped, and the padding that makes the
        output [C, H, W, N]: ``dilation * (k - 1) - pad`` at the top and left."""
        xp = self.xp
        n, c, h, w = self.x_shape
        o, _, kh, kw = weight.shape
        flipped = xp.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(c, -1)
        dh, dw = self.dilation
        pads = (dh * (kh - 1) - self.pads[0], 0, dw * (kw - 1) - self.pads[2], 0)
        gx = xp.empty((c, h, w, n), grad3.dtype)
        self.runner.forward(grad3, flipped, None, gx, geometry((n, o, *self.out_hw), (kh, kw), (h, w), (1, 1),
                                                               pads, self.dilation))
        return gx.transpose(TO_NCHW)

    def release(self):
        if self.columns is not None:
            POOL.give(self.device, self.columns)
            self.columns = None
        self.source = None
        super().release()


def conv_padding(padding, kernel, dilation, stride, op):
    """``(top, bottom, left, right)`` from an int, a pair, ``'valid'`` or ``'same'`` (as PyTorch)."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"{op}: padding='same' is not supported for strided convolutions (stride={stride})")
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return (total[0] // 2, total[0] - total[0] // 2, total[1] // 2, total[1] - total[1] // 2)
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be an int, a pair of ints, 'valid' or 'same', got {padding!r}")
    ph, pw = pair(padding, "padding", op)
    if ph < 0 or pw < 0:
        raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
    return (ph, ph, pw, pw)


def positive_pair(value, name, op):
    """``value`` as a pair of positive ints, or a clear error."""
    result = pair(value, name, op)
    if min(result) < 1:
        raise ValueError(f"{op}: {name} must be positive, got {value!r}")
    return result


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation, as PyTorch's ``F.conv2d``).

    input [N, C, H, W] (or unbatched [C, H, W]); weight [O, C/groups, kh, kw]; bias [O] or None.
    ``padding``: int, pair, ``'valid'`` or ``'same'``; zeros are padded. Returns [N, O, OH, OW].
    """
    op = "conv2d"
    if input.ndim not in (3, 4):
        raise ValueError(f"{op}: expected a 4-D input [N, C, H, W] (or 3-D [C, H, W]), got shape {input.shape}")
    if input.ndim == 3:
        return conv2d(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups).squeeze(0)
    if weight.ndim != 4:
        raise ValueError(f"{op}: weight must be 4-D [out_channels, in_channels/groups, kh, kw], got {weight.shape}")
    if not isinstance(groups, int) or groups < 1 or weight.shape[0] % groups:
        raise ValueError(f"{op}: groups={groups!r} must be a positive int dividing out_channels={weight.shape[0]}")
    if input.shape[1] != weight.shape[1] * groups:
        raise ValueError(f"{op}: input of shape {input.shape} has {input.shape[1]} channels, but weight of shape "
                         f"{weight.shape} with groups={groups} expects {weight.shape[1] * groups}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"{op}: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: input must be floating point, got {input.dtype}")
    check_same_dtype(op, input, weight, bias)
    stride = positive_pair(stride, "stride", op)
    dilation = positive_pair(dilation, "dilation", op)
    kernel = weight.shape[2:]
    pads = conv_padding(padding, kernel, dilation, stride, op)
    out_hw = output_size(op, input.shape[2:], kernel, stride, pads, dilation)
    keep_columns = grad_mode.enabled and weight.requires_grad
    return Conv2d(stride, pads, dilation, groups, out_hw, keep_columns).apply(input, weight, bias)

