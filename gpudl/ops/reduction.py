"""Reductions: sum mean max min var std prod logsumexp, and softmax / log_softmax."""
import math

from ..autograd.function import Function
from ._util import accumulation_dtype, normalize_axes, pick_axis, pick_keepdims
from .elementwise import sqrt


def _expand_back(g, in_shape, axes, keepdims):
    """Reshape a reduced gradient so it broadcasts against the input again."""
    if keepdims:
        return g
    shape = list(in_shape)
    for a in axes:
        shape[a] = 1
    return g.reshape(shape)


def _broadcast_copy(xp, g, shape):
    """``g`` broadcast to ``shape`` as a fresh contiguous array (cheaper than ``broadcast_to`` for
    small arrays, and safe to keep as a leaf's ``.grad``)."""
    out = xp.empty(shape, dtype=g.dtype)
    out[...] = g
    return out


class _Reduction(Function):
    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims


class Sum(_Reduction):
    def forward(self, x):
        self.in_shape = x.shape
        acc = accumulation_dtype(x.dtype)
        out = x.sum(axis=self.axes, keepdims=self.keepdims, dtype=acc)
        return out.astype(x.dtype) if acc is not None else out

    def backward(self, g):
        return _broadcast_copy(self.xp, _expand_back(g, self.in_shape, self.axes, self.keepdims), self.in_shape)


class Mean(_Reduction):
    def forward(self, x):
        self.in_shape = x.shape
        self.count = math.prod(x.shape[a] for a in self.axes)
        acc = accumulation_dtype(x.dtype)
        out = x.mean(axis=self.axes, keepdims=self.keepdims, dtype=acc)
        return out.astype(x.dtype) if acc is not None else out  # an integer mean stays float64, as NumPy

    def backward(self, g):
        g = _expand_back(g, self.in_shape, self.axes, self.keepdims) / self.count
        return _broadcast_copy(self.xp, g, self.in_shape)


class Extreme(_Reduction):
    """max / min along axes; tied extremes share the gradient equally (as ``torch.amax``)."""

    def __init__(self, axes, keepdims, largest):
        super().__init__(axes, keepdims)
        self.largest = largest

    def forward(self, x):
        if x.size == 0:
            raise ValueError(f"{'max' if self.largest else 'min'}: cannot reduce an empty tensor of shape {x.shape}")
        out = x.max(axis=self.axes, keepdims=True) if self.largest else x.min(axis=self.axes, keepdims=True)
        self.saved = (x, out)
        return out if self.keepdims else out.reshape([n for k, n in enumerate(x.shape) if k not in self.axes])

    def backward(self, g):
        x, out = self.saved
        mask = (x == out).astype(g.dtype)
        count = mask.sum(axis=self.axes, keepdims=True)
        return mask * (_expand_back(g, x.shape, self.axes, self.keepdims) / count)


class Var(_Reduction):
    def __init__(self, axes, keepdims, ddof):
        super().__init__(axes, keepdims)
        self.ddof = ddof

    def forward(self, x):
        acc = accumulation_dtype(x.dtype)
        xa = x.astype(acc) if acc is not None else x
        mean = xa.mean(axis=self.axes, keepdims=True)
        centered = xa - mean
        self.saved = (centered,)
        self.divisor = math.prod(x.shape[a] for a in self.axes) - self.ddof
        out = (centered * centered).sum(axis=self.axes, keepdims=self.keepdims) / self.divisor
        return out.astype(x.dtype)

    def backward(self, g):
        centered = self.saved[0]
        g = _expand_back(g, centered.shape, self.axes, self.keepdims)
        return (g * centered * (2.0 / self.divisor)).astype(g.dtype)


class Prod(_Reduction):
    def forward(self, x):
        self.saved = (x,)
        return x.prod(axis=self.axes, keepdims=self.keepdims)

    def backward(self, g):
        # d prod / d x_k is the product of all other elements: exclusive cumulative products
        # from both sides, so zeros in x need no division
        x = self.saved[0]
        xp = self.xp
        kept = [a for a in range(x.ndim) if a not in self.axes]
        order = kept + list(self.axes)
        moved = xp.transpose(x, order)
        flat = moved.reshape(moved.shape[:len(kept)] + (-1,))
        ones = xp.ones(flat.shape[:-1] + (1,), dtype=x.dtype)
        left = xp.cumprod(xp.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
        right = xp.flip(xp.cumprod(xp.concatenate([ones, xp.flip(flat, -1)[..., :-1]], axis=-1), axis=-1), -1)
        others = (left * right).reshape(moved.shape)
        inverse = [order.index(a) for a in range(x.ndim)]
        others = xp.transpose(others, inverse)
        return others * _expand_back(g, x.shape, self.axes, self.keepdims)


def _shifted_max(xp, x, axes):
    """Row max used to stabilise exp; infinite maxima are replaced by 0 so inf - inf never appears."""
    m = x.max(axis=axes, keepdims=True)
    return xp.where(xp.isfinite(m), m, 0)


def _shifted(xp, x, axis):
    """``x`` (float16 promoted to float32) minus its stabilising max along ``axis``."""
    acc = accumulation_dtype(x.dtype)
    xa = x.astype(acc) if acc is not None else x
    return xa - _shifted_max(xp, xa, axis)


class LogSumExp(_Reduction):
    def forward(self, x):
        xp = self.xp
        acc = accumulation_dtype(x.dtype)
        xa = x.astype(acc) if acc is not None else x
        m = _shifted_max(xp, xa, self.axes)
        out = xp.log(xp.exp(xa - m).sum(axis=self.axes, keepdims=True)) + m
        self.saved = (x, out)
        out = out.astype(x.dtype)
        return out if self.keepdims else out.reshape([n for k, n in enumerate(x.shape) if k not in self.axes])

    def backward(self, g):
        x, out = self.saved
        weights = self.xp.exp(x - out)
        return (weights * _expand_back(g, x.shape, self.axes, self.keepdims)).astype(g.dtype)


class Softmax(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        e = self.xp.exp(_shifted(self.xp, x, self.axis))
        out = (e / e.sum(axis=self.axis, keepdims=True)).astype(x.dtype)
        self.saved = (out,)
        return out

    def backward(self, g):
        y = self.saved[0]
        return y * (g - (g * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = self.xp
        shifted = _shifted(xp, x, self.axis)
        out = (shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))).astype(x.dtype)
        self.saved = (out,)
        return out

    def backward(self, g):
        y = self.saved[0]
        return g - self.xp.exp(y) * g.sum(axis=self.axis, keepdims=True)


def _reduce(function_class, name):
    def op(x, axis=None, keepdims=False, *, dim=None, keepdim=False):
        axes = normalize_axes(pick_axis(axis, dim), x.ndim, name)
        return function_class(axes, pick_keepdims(keepdims, keepdim)).apply(x)
    op.__name__ = name
    op.__doc__ = (f"{name} over ``axis`` (int, tuple or None for all; ``dim=`` also accepted), "
                  "keeping reduced axes with ``keepdims=True``.")
    return op


sum = _reduce(Sum, "sum")
mean = _reduce(Mean, "mean")
prod = _reduce(Prod, "prod")
logsumexp = _reduce(LogSumExp, "logsumexp")


def max(x, axis=None, keepdims=False, *, dim=None, keepdim=False):
    """Largest values over ``axis`` (values, as NumPy; use ``argmax`` for indices)."""
    axes = normalize_axes(pick_axis(axis, dim), x.ndim, "max")
    return Extreme(axes, pick_keepdims(keepdims, keepdim), largest=True).apply(x)


def min(x, axis=None, keepdims=False, *, dim=None, keepdim=False):
    """Smallest values over ``axis`` (values, as NumPy; use ``argmin`` for indices)."""
    axes = normalize_axes(pick_axis(axis, dim), x.ndim, "min")
    return Extreme(axes, pick_keepdims(keepdims, keepdim), largest=False).apply(x)


def _ddof(ddof, correction, unbiased):
    given = [v is not None for v in (ddof, correction, unbiased)]
    if given.count(True) > 1:
        raise TypeError("var/std: pass only one of ddof=, correction= and unbiased=")
    if unbiased is not None:
        return 1 if unbiased else 0
    value = ddof if ddof is not None else correction
    return 0 if value is None else value


def var(x, axis=None, keepdims=False, ddof=None, *, dim=None, keepdim=False, correction=None, unbiased=None):
    """Variance over ``axis``; population (``ddof=0``) by default as NumPy, ``ddof``/``correction``/
    ``unbiased`` select the sample variance."""
    return _variance("var", x, pick_axis(axis, dim), pick_keepdims(keepdims, keepdim),
                     _ddof(ddof, correction, unbiased))


def std(x, axis=None, keepdims=False, ddof=None, *, dim=None, keepdim=False, correction=None, unbiased=None):
    """Standard deviation: the square root of ``var`` with the same arguments."""
    return sqrt(_variance("std", x, pick_axis(axis, dim), pick_keepdims(keepdims, keepdim),
                          _ddof(ddof, correction, unbiased)))


def _variance(name, x, axis, keepdims, ddof):
    return Var(normalize_axes(axis, x.ndim, name), keepdims, ddof).apply(x)


def _single_axis(axis, dim, ndim, name):
    axis = pick_axis(axis, dim, default=-1)
    return normalize_axes(axis, ndim, name)[0]


def softmax(x, axis=None, *, dim=None):
    """Softmax along ``axis`` (default: last), computed stably."""
    return Softmax(_single_axis(axis, dim, x.ndim, "softmax")).apply(x)


def log_softmax(x, axis=None, *, dim=None):
    """log(softmax(x)) along ``axis`` (default: last), computed stably."""
    return LogSoftmax(_single_axis(axis, dim, x.ndim, "log_softmax")).apply(x)
