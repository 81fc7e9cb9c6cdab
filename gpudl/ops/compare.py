"""Comparisons, logical ops and arg-reductions: results carry no gradient."""
from ..tensor import Tensor
from ._util import UNSET, broadcast_error, dims, normalize_axes, operand


def _data(value):
    return value.data if isinstance(value, Tensor) else value


def _result(x, values):
    """A no-grad tensor on ``x``'s backend; NumPy gives scalars for 0-d results, a tensor holds an array."""
    return Tensor(x.backend.xp.asarray(values))


def _compare(ufunc_name, doc):
    def op(a, b):
        reference = a if isinstance(a, Tensor) else b
        a, b = operand(a, reference), operand(b, reference)
        if isinstance(a, Tensor) and isinstance(b, Tensor) and a.device != b.device:
            raise RuntimeError(f"{ufunc_name}: tensors are on different devices: {a.device} and {b.device}")
        xp = reference.backend.xp
        try:
            return _result(reference, getattr(xp, ufunc_name)(_data(a), _data(b)))
        except ValueError as exc:
            raise broadcast_error(ufunc_name, (a, b), exc) from None
    op.__name__ = ufunc_name
    op.__doc__ = doc
    return op


equal = _compare("equal", "Elementwise ``a == b`` as a bool tensor.")
not_equal = _compare("not_equal", "Elementwise ``a != b`` as a bool tensor.")
less = _compare("less", "Elementwise ``a < b`` as a bool tensor.")
less_equal = _compare("less_equal", "Elementwise ``a <= b`` as a bool tensor.")
greater = _compare("greater", "Elementwise ``a > b`` as a bool tensor.")
greater_equal = _compare("greater_equal", "Elementwise ``a >= b`` as a bool tensor.")
logical_and = _compare("logical_and", "Elementwise logical and.")
eq, ne, lt, le, gt, ge = equal, not_equal, less, less_equal, greater, greater_equal  # PyTorch's names
logical_or = _compare("logical_or", "Elementwise logical or.")


def logical_not(x):
    """Elementwise logical not."""
    return _result(x, x.backend.xp.logical_not(x.data))


def isfinite(x):
    """Elementwise: neither infinite nor NaN."""
    return _result(x, x.backend.xp.isfinite(x.data))


def isnan(x):
    """Elementwise: is NaN."""
    return _result(x, x.backend.xp.isnan(x.data))


def _arg(name):
    def op(x, dim=None, keepdim=None, *, axis=UNSET, keepdims=None):
        axis, keep, _ = dims(name, axis, dim, keepdims, keepdim)
        if axis is not None:
            axis = normalize_axes(axis, x.ndim, name)[0]
        if x.size == 0:
            raise ValueError(f"{name}: cannot take {name} of an empty tensor of shape {x.shape}")
        return _result(x, getattr(x.data, name)(axis=axis, keepdims=keep))
    op.__name__ = name
    op.__doc__ = (f"Indices of the {'largest' if name == 'argmax' else 'smallest'} values along ``axis`` "
                  "(first one on ties; flattened when dim is None), as int64. ``dim=``/``keepdim=`` or NumPy's "
                  "``axis=``/``keepdims=``, not mixed.")
    return op


argmax = _arg("argmax")
argmin = _arg("argmin")


def any(x, dim=None, keepdim=None, *, axis=UNSET, keepdims=None):
    """True where any element along ``axis`` is non-zero."""
    axis, keep, _ = dims("any", axis, dim, keepdims, keepdim)
    return _result(x, x.data.any(axis=normalize_axes(axis, x.ndim, "any"), keepdims=keep))


def all(x, dim=None, keepdim=None, *, axis=UNSET, keepdims=None):
    """True where every element along ``axis`` is non-zero."""
    axis, keep, _ = dims("all", axis, dim, keepdims, keepdim)
    return _result(x, x.data.all(axis=normalize_axes(axis, x.ndim, "all"), keepdims=keep))
