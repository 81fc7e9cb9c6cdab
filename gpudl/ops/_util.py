"""Helpers shared by the op modules: operand conversion and axis arguments."""
from .. import backend as _backend
from ..tensor import Tensor

SCALAR_TYPES = (bool, int, float)


def operand(value, reference: Tensor):
    """``value`` as an op input next to ``reference``: tensors stay, Python scalars stay scalars
    (so they never change a float dtype, NEP 50), arrays and lists become tensors."""
    if isinstance(value, Tensor) or type(value) in SCALAR_TYPES:
        return value
    if hasattr(value, "dtype") and getattr(value, "ndim", None) == 0 and not _backend.is_array(value):
        return value.item()
    if _backend.is_array(value):
        return Tensor(value)
    if isinstance(value, (list, tuple)):
        return Tensor(_backend.to_device(_backend.host_array_from_data(value), reference.device))
    raise TypeError(f"unsupported operand of type {type(value).__name__} for a tensor op")


def as_tensor_like(value, reference: Tensor) -> Tensor:
    """``value`` as a Tensor on ``reference``'s device (scalars take ``reference``'s dtype)."""
    if isinstance(value, Tensor):
        return value
    if type(value) in SCALAR_TYPES:
        data = _backend.host_array_from_data(value, reference.dtype)
    elif _backend.is_array(value):
        return Tensor(value)
    else:
        data = _backend.host_array_from_data(value)
    return Tensor(_backend.to_device(data, reference.device))


def broadcast_error(op, operands, exc):
    """The ValueError for operands of ``op`` whose shapes do not broadcast (scalars show as ``()``)."""
    shapes = " and ".join(str(tuple(getattr(v, "shape", ()))) for v in operands)
    return ValueError(f"{op}: cannot broadcast shapes {shapes}: {exc}")


class _Unset:
    """The default of ``axis=``: tells "not given" (PyTorch's vocabulary) from ``axis=None`` (NumPy's, all axes)."""

    def __repr__(self):
        return "<not given>"


UNSET = _Unset()


def dims(op, axis, dim, keepdims=None, keepdim=None, default=None):
    """The axis and keepdims of a call, and whether it speaks NumPy.

    The rule: ``dim=`` (or a positional dim) and ``keepdim=`` speak PyTorch; ``axis=`` and
    ``keepdims=`` speak NumPy; a call with neither speaks PyTorch. Mixing the two vocabularies is a
    TypeError. Returns ``(axis, keepdims, numpy_style)``; a list of axes becomes a tuple, and an axis
    given by neither word is ``default``.
    """
    numpy_words = [w for w, v, unset in (("axis", axis, UNSET), ("keepdims", keepdims, None)) if v is not unset]
    torch_words = [w for w, v in (("dim", dim), ("keepdim", keepdim)) if v is not None]
    if numpy_words and torch_words:
        raise TypeError(f"{op}: {'/'.join(numpy_words)}= (NumPy's vocabulary) cannot be mixed with "
                        f"{'/'.join(torch_words)}= (PyTorch's: dim=, a positional dim, keepdim=) in one call; "
                        "use axis=/keepdims= or dim=/keepdim=")
    value = dim if dim is not None else axis if axis is not UNSET else default
    return (tuple(value) if isinstance(value, list) else value), bool(keepdims or keepdim), bool(numpy_words)


def normalize_axes(axis, ndim, op):
    """``axis`` (None, int or tuple, negatives allowed) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    result = []
    for a in axes:
        if not isinstance(a, int) or not -max(ndim, 1) <= a < max(ndim, 1):
            raise ValueError(f"{op}: axis {a!r} is out of range for a tensor with {ndim} dimensions")
        result.append(a % max(ndim, 1))
    if len(set(result)) != len(result):
        raise ValueError(f"{op}: repeated axis in {axis!r}")
    return tuple(sorted(result))


def accumulation_dtype(dtype):
    """float32 for float16 (reductions accumulate in float32), else None (use the dtype itself)."""
    return _backend.float32 if dtype == _backend.float16 else None
