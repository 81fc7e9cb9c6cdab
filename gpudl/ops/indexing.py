"""Indexing: ints, slices, steps, None, Ellipsis, integer arrays and boolean masks.

Backward scatters the gradient back: a plain assignment for basic indexing (a view, no
repeats), ``add.at`` for advanced indexing, where an element may be picked twice.
"""
from .. import backend as _backend
from ..autograd.function import Function
from ..tensor import Tensor


def index_data(index, device=None):
    """Turn a user index (tensors, lists, arrays) into one the array module accepts."""
    if isinstance(index, tuple):
        return tuple(index_data(part, device) for part in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        array = _backend.host_array_from_data(index)
        return array if device is None else _backend.to_device(array, device)
    if device is not None and _backend.is_array(index) and _backend.device_of(index) != device:
        return _backend.to_device(index, device)
    return index


def _is_basic(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, slice)) for p in parts)


class GetItem(Function):
    def __init__(self, index):
        self.index = index
        self.is_view = _is_basic(index)

    def forward(self, x):
        self.in_shape, self.in_dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, g):
        xp = self.xp
        gx = xp.zeros(self.in_shape, dtype=self.in_dtype)
        if self.is_view:
            gx[self.index] = g
        else:
            xp.add.at(gx, self.index, g)
        return gx


def getitem(x, index):
    """``x[index]``; differentiable (repeated indices accumulate their gradients)."""
    index = index_data(index, x.device)
    try:
        return GetItem(index).apply(x)
    except IndexError as exc:
        raise IndexError(f"index {_describe_index(index)} is invalid for a tensor of shape {x.shape}: {exc}") from None


def _describe_index(index):
    parts = index if isinstance(index, tuple) else (index,)
    return "[" + ", ".join(f"<{p.dtype} array of shape {p.shape}>" if hasattr(p, "shape") else repr(p)
                           for p in parts) + "]"
