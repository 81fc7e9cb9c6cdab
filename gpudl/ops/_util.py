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


def pick_axis(axis, dim, default=None):
    """``axis=`` (NumPy) or ``dim=`` (PyTorch); a list becomes a tuple."""
    if axis is not None and dim is not None:
        raise TypeError("pass either axis= or dim=, not both")
    value = axis if axis is not None else dim
    if value is None:
        return default
    return tuple(value) if isinstance(value, list) else value


def pick_keepdims(keepdims, keepdim):
    """``keepdims=`` (NumPy) or ``keepdim=`` (PyTorch)."""
    return bool(keepdims or keepdim)


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
