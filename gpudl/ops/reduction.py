"""Reductions: sum mean max min amax amin var std prod logsumexp, and softmax / log_softmax.

The NumPy/PyTorch rule (``gpudl.ops._util.dims``): ``dim=`` (or a positional dim) and ``keepdim=``
speak PyTorch, ``axis=`` and ``keepdims=`` speak NumPy, a call with neither speaks PyTorch, and
mixing them is a TypeError. Where the two differ: ``max``/``min`` with a dim return ``(values,
indices)``; ``var``/``std`` divide by ``n - 1`` in PyTorch's vocabulary and by ``n`` in NumPy's.
"""
import math

from ..autograd.function import Function
from ..tensor import Tensor
from ._util import UNSET, accumulation_dtype, dims, normalize_axes
from .elementwise import maximum, minimum, sqrt
from .selection import values_and_indices


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
        if any(x.shape[a] == 0 for a in self.axes):  # an empty result (no rows to reduce) is fine, as in NumPy
            raise ValueError(f"{'max' if self.largest else 'min'}: cannot reduce an empty tensor of shape {x.shape} "
                             f"over axes {self.axes} (no identity)")
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
        scale = 2.0 / self.divisor if self.divisor else math.inf  # no degrees of freedom: NaN, as PyTorch
        return (g * centered * scale).astype(g.dtype)


class Prod(_Reduction):
    def forward(self, x):
        self.saved = (x,)
        return x.prod(axis=self.axes, keepdims=self.keepdims)

    def backward(self, g):
        # d prod / d x_k is the product of all other elements: exclusive cumulative products
        # from both sides, so zeros in x need no division
        x = self.saved[0]
        xp = self.xp
        if x.size == 0:  # nothing to differentiate (and no -1 to infer in the reshape below)
            return xp.zeros_like(x)
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


def _reduce(function_class, name, doc):
    def op(x, dim=None, keepdim=None, *, axis=UNSET, keepdims=None):
        axis, keep, _ = dims(name, axis, dim, keepdims, keepdim)
        return function_class(normalize_axes(axis, x.ndim, name), keep).apply(x)
    op.__name__ = name
    op.__doc__ = (f"{doc} over ``dim`` (an int, a tuple, or None for all); ``keepdim=True`` keeps the reduced "
                  "dims. NumPy's ``axis=``/``keepdims=`` are accepted too (same result; don't mix the two).")
    return op


sum = _reduce(Sum, "sum", "The sum")
mean = _reduce(Mean, "mean", "The mean")
prod = _reduce(Prod, "prod", "The product")
logsumexp = _reduce(LogSumExp, "logsumexp", "log(sum(exp(x))), computed stably,")


def _extreme(name, largest):
    def op(x, dim=None, keepdim=None, *, axis=UNSET, keepdims=None):
        if isinstance(dim, Tensor):  # PyTorch's max(a, b): the elementwise maximum
            return (maximum if largest else minimum)(x, dim)
        axis, keep, numpy_style = dims(name, axis, dim, keepdims, keepdim)
        if numpy_style or axis is None or isinstance(axis, tuple):
            return Extreme(normalize_axes(axis, x.ndim, name), keep, largest).apply(x)
        return values_and_indices(x, axis, keep, largest)
    op.__name__ = name
    word = "largest" if largest else "smallest"
    op.__doc__ = (
        f"The {word} values. PyTorch's vocabulary: ``{name}(dim)``/``{name}(dim=d, keepdim=...)`` returns the named "
        f"``(values, indices)`` (the first {word} element; its gradient goes there), ``{name}()`` the value over all "
        f"elements (or over a tuple of dims), ``{name}(other_tensor)`` the elementwise "
        f"{'maximum' if largest else 'minimum'}. NumPy's "
        f"``{name}(axis=..., keepdims=...)`` returns the values (tied extremes share the gradient, as "
        f"``a{name}``). Mixing the vocabularies is a TypeError.")
    return op


max = _extreme("max", largest=True)
min = _extreme("min", largest=False)


def _extreme_values(name, largest):
    def op(x, dim=None, keepdim=None, *, axis=UNSET, keepdims=None):
        axis, keep, _ = dims(name, axis, dim, keepdims, keepdim)
        return Extreme(normalize_axes(axis, x.ndim, name), keep, largest).apply(x)
    op.__name__ = name
    op.__doc__ = (f"PyTorch's ``{name}``: the {'largest' if largest else 'smallest'} values over ``dim`` (an int, a "
                  "tuple or None for all), without indices; tied extremes share the gradient.")
    return op


amax = _extreme_values("amax", largest=True)
amin = _extreme_values("amin", largest=False)


def _ddof(numpy_style, ddof, correction, unbiased):
    given = [v is not None for v in (ddof, correction, unbiased)]
    if given.count(True) > 1:
        raise TypeError("var/std: pass only one of ddof=, correction= and unbiased=")
    if unbiased is not None:
        return 1 if unbiased else 0
    value = ddof if ddof is not None else correction
    if value is None:
        return 0 if numpy_style else 1
    return value


def var(x, dim=None, unbiased=None, keepdim=None, *, axis=UNSET, keepdims=None, ddof=None, correction=None):
    """The variance over ``dim``. PyTorch's vocabulary (``dim=``, a positional dim, or no dim) divides
    by ``n - 1`` (``correction=1``); NumPy's (``axis=``, ``keepdims=``) by ``n`` (``ddof=0``).
    ``ddof=``, ``correction=`` or ``unbiased=`` choose explicitly, with either vocabulary."""
    return _variance("var", x, dim, unbiased, keepdim, axis, keepdims, ddof, correction)


def std(x, dim=None, unbiased=None, keepdim=None, *, axis=UNSET, keepdims=None, ddof=None, correction=None):
    """The standard deviation: the square root of ``var`` with the same arguments (and the same rule:
    ``dim=`` divides by ``n - 1``, ``axis=`` by ``n``)."""
    return sqrt(_variance("std", x, dim, unbiased, keepdim, axis, keepdims, ddof, correction))


def _variance(name, x, dim, unbiased, keepdim, axis, keepdims, ddof, correction):
    axis, keep, numpy_style = dims(name, axis, dim, keepdims, keepdim)
    return Var(normalize_axes(axis, x.ndim, name), keep, _ddof(numpy_style, ddof, correction, unbiased)).apply(x)


def softmax(x, dim=None, *, axis=UNSET):
    """Softmax along ``dim`` (or ``axis=``; default: the last), computed stably."""
    axis = dims("softmax", axis, dim, default=-1)[0]
    return Softmax(normalize_axes(axis, x.ndim, "softmax")[0]).apply(x)


def log_softmax(x, dim=None, *, axis=UNSET):
    """log(softmax(x)) along ``dim`` (or ``axis=``; default: the last), computed stably."""
    axis = dims("log_softmax", axis, dim, default=-1)[0]
    return LogSoftmax(normalize_axes(axis, x.ndim, "log_softmax")[0]).apply(x)
