"""Cumulative ops along a dim: ``cumsum`` and ``cumprod``, with gradients.

PyTorch's ``cumsum(x, dim)`` needs the dim; NumPy's ``cumsum(x, axis=None)`` flattens first. Both
vocabularies work (not mixed in one call).
"""
from ..autograd.function import Function
from ._util import UNSET, dims, normalize_axes


def _reverse_cumsum(xp, a, axis):
    """``out[k] = sum(a[k:])`` along ``axis``."""
    return xp.flip(xp.cumsum(xp.flip(a, axis=axis), axis=axis), axis=axis)


class CumSum(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        return self.xp.cumsum(x, axis=self.axis)

    def backward(self, g):
        return _reverse_cumsum(self.xp, g, self.axis)


class CumProd(Function):
    """Backward without dividing by zero: with ``z`` the first zero of a row, an element before ``z``
    gets ``sum_{i>=k} g_i y_i / x_k``; the element at ``z`` gets the same sum with ``x_z`` taken as 1
    (the products through it, without it); elements after ``z`` get 0 (every product they enter
    holds ``x_z = 0``)."""

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        y = self.xp.cumprod(x, axis=self.axis)
        self.saved = (x, y)
        return y

    def backward(self, g):
        xp, axis = self.xp, self.axis
        x, y = self.saved
        n = x.shape[axis]
        zero = x == 0
        position = xp.arange(n).reshape([n if a == axis else 1 for a in range(x.ndim)])
        first_zero = xp.where(zero.any(axis=axis, keepdims=True), zero.argmax(axis=axis, keepdims=True), n)
        before = position < first_zero
        at = position == first_zero
        nonzero_part = _reverse_cumsum(xp, g * y, axis) / xp.where(before, x, 1)
        through_zero = _reverse_cumsum(xp, g * xp.cumprod(xp.where(at, 1, x), axis=axis), axis)
        return xp.where(before, nonzero_part, xp.where(at, through_zero, 0)).astype(x.dtype, copy=False)


def _cumulative(function_class, name, doc):
    def op(x, dim=None, *, axis=UNSET):
        axis, _, numpy_style = dims(name, axis, dim)
        if axis is None:
            if not numpy_style:
                raise TypeError(f"{name}: dim is required (PyTorch), e.g. {name}(x, dim=0); NumPy's axis=None "
                                "flattens first")
            x, axis = x.reshape(-1), 0
        if x.ndim == 0:
            x = x.reshape(1)
            return function_class(0).apply(x).reshape(())
        return function_class(normalize_axes(axis, x.ndim, name)[0]).apply(x)
    op.__name__ = name
    op.__doc__ = (f"{doc} along ``dim`` (PyTorch: ``{name}(x, dim)``, the dim is required) or ``axis=`` (NumPy; "
                  "``axis=None`` flattens first); differentiable.")
    return op


cumsum = _cumulative(CumSum, "cumsum", "Cumulative sums")
cumprod = _cumulative(CumProd, "cumprod", "Cumulative products")
