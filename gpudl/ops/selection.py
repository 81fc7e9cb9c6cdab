"""Ops that pick elements along a dim: ``sort``, ``argsort``, ``topk``, ``median``, ``gather``.

Each finds indices first (no gradient), then takes the values with one differentiable gather, so
the gradient of a picked value goes to the element it came from (PyTorch's rule for ``max(dim)``,
``sort``, ``topk`` and ``median(dim)``). The PyTorch-style calls return named ``(values,
indices)`` tuples; the NumPy-style calls (``axis=``) return the values. Sorting is stable on both
backends, so ties give the same indices on the CPU and the GPU.
"""
import collections

from .. import backend as _backend
from ..autograd.function import Function
from ..tensor import Tensor
from ._util import UNSET, dims, normalize_axes


def _values_indices(name):
    kind = collections.namedtuple(name, ["values", "indices"])
    kind.__doc__ = f"What ``{name}`` returns with a dim: ``values`` and their int64 ``indices`` along the dim."
    return kind


class return_types:  # noqa: N801  (PyTorch's name: torch.return_types.max, ...)
    """The named tuples of the ops that return ``(values, indices)``."""

    max = _values_indices("max")
    min = _values_indices("min")
    sort = _values_indices("sort")
    topk = _values_indices("topk")
    median = _values_indices("median")


class TakeAlong(Function):
    """``take_along_axis(x, indices, axis)``; backward sends each gradient to the element it came from.

    ``unique``: no index repeats along the axis (sort, topk, max, median), so backward can put the
    gradients in place; otherwise (``gather``) repeated picks accumulate.
    """

    def __init__(self, axis, unique):
        self.axis, self.unique = axis, unique

    def forward(self, x, indices):
        self.in_shape, self.in_dtype, self.indices = x.shape, x.dtype, indices
        return self.xp.take_along_axis(x, indices, axis=self.axis)

    def backward(self, g):
        xp = self.xp
        gx = xp.zeros(self.in_shape, dtype=self.in_dtype)
        if self.unique:
            xp.put_along_axis(gx, self.indices, g, axis=self.axis)
            return gx, None
        ndim = self.indices.ndim
        grid = [self.indices if a == self.axis else xp.arange(n).reshape([n if b == a else 1 for b in range(ndim)])
                for a, n in enumerate(self.indices.shape)]
        xp.add.at(gx, tuple(grid), g)
        return gx, None

    def release(self):
        super().release()
        self.indices = None


def take_along(x, indices, axis, unique=True):
    """The elements of ``x`` at ``indices`` (an int64 array) along ``axis``, differentiable in ``x``."""
    return TakeAlong(axis, unique).apply(x, indices)


def stable_argsort(x, axis, descending=False):
    """Indices that sort the array ``x`` along ``axis`` (ties keep their order, also when descending)."""
    backend = _backend.backend_of(x)
    xp = backend.xp
    kind = {"kind": "stable"} if backend.name == "numpy" else {}  # CuPy's sort is always stable and takes no other kind
    if not descending:
        return xp.argsort(x, axis=axis, **kind)
    flipped = xp.argsort(xp.flip(x, axis=axis), axis=axis, **kind)
    return (x.shape[axis] - 1) - xp.flip(flipped, axis=axis)


def _one_axis(axis, x, op):
    if isinstance(axis, tuple):
        raise TypeError(f"{op}: takes one dim, got {axis!r}")
    return normalize_axes(axis, x.ndim, op)[0] if x.ndim else 0


def _indices_tensor(indices):
    return Tensor(indices.astype(_backend.int64, copy=False))


def _scalar_pick(x, kind, numpy_style):
    """What a pick returns for a 0-d tensor: the value itself (at index 0)."""
    if numpy_style:
        return x.clone()
    return kind(x.clone(), Tensor(_backend.new_array(x.device, "zeros", (), dtype=_backend.int64)))


def _nonempty(x, axis, op):
    if x.ndim and x.shape[axis] == 0:
        raise ValueError(f"{op}: dim {axis} of shape {x.shape} is empty; there is nothing to pick")


def sort(x, dim=None, descending=False, stable=False, *, axis=UNSET):
    """Sort along a dim. PyTorch's ``sort(dim=-1, descending=False)`` (also with no argument) returns
    ``(values, indices)``; NumPy's ``sort(axis=...)`` returns the values (``axis=None`` flattens).

    Ties keep their order (``stable`` is accepted; sorting is always stable). The gradient of each
    sorted value goes to the element it came from.
    """
    axis, _, numpy_style = dims("sort", axis, dim, default=-1)
    if numpy_style and axis is None:
        x, axis = x.reshape(-1), 0
    if x.ndim == 0:
        return _scalar_pick(x, return_types.sort, numpy_style)
    axis = _one_axis(axis, x, "sort")
    indices = stable_argsort(x.data, axis, descending)
    values = take_along(x, indices, axis)
    return values if numpy_style else return_types.sort(values, _indices_tensor(indices))


def argsort(x, dim=None, descending=False, stable=False, *, axis=UNSET):
    """Indices (int64) that sort ``x`` along a dim (default: the last; NumPy's ``axis=None`` flattens)."""
    axis, _, numpy_style = dims("argsort", axis, dim, default=-1)
    if numpy_style and axis is None:
        x, axis = x.reshape(-1), 0
    if x.ndim == 0:
        return _scalar_pick(x, return_types.sort, False).indices
    return _indices_tensor(stable_argsort(x.data, _one_axis(axis, x, "argsort"), descending))


def topk(x, k, dim=-1, largest=True, sorted=True):
    """The ``k`` largest (``largest=False``: smallest) elements along ``dim``, as PyTorch's named
    ``(values, indices)``, largest first; ties keep their order."""
    axis = _one_axis(dim, x, "topk")
    n = x.shape[axis] if x.ndim else 1
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"topk: k must be an integer in [0, {n}] for dim {dim} of shape {x.shape}, got {k!r}")
    if x.ndim == 0:
        return _scalar_pick(x, return_types.topk, False)
    order = stable_argsort(x.data, axis, descending=largest)
    indices = order[tuple(slice(0, k) if a == axis else slice(None) for a in range(x.ndim))]
    return return_types.topk(take_along(x, indices, axis), _indices_tensor(indices))


def median(x, dim=None, keepdim=None, *, axis=UNSET, keepdims=None):
    """The lower of the two middle values (PyTorch's median; NumPy would average them), NaN if any is NaN.

    ``median(dim)`` (PyTorch) returns ``(values, indices)``; ``median(axis=...)`` (NumPy) and a call
    over all elements return the values. The gradient goes to the element picked.
    """
    axis, keep, numpy_style = dims("median", axis, dim, keepdims, keepdim)
    flat = axis is None
    if flat:
        x, axis = x.reshape(-1), 0
    axis = _one_axis(axis, x, "median")
    if x.ndim == 0:
        return _scalar_pick(x, return_types.median, numpy_style or flat)
    _nonempty(x, axis, "median")
    xp = x.backend.xp
    order = stable_argsort(x.data, axis)
    middle = (x.shape[axis] - 1) // 2
    indices = order[tuple(slice(middle, middle + 1) if a == axis else slice(None) for a in range(x.ndim))]
    if x.dtype.kind == "f":  # NaN sorts last; PyTorch's median is NaN when the row holds one
        nan = xp.isnan(x.data)
        indices = xp.where(nan.any(axis=axis, keepdims=True), nan.argmax(axis=axis, keepdims=True), indices)
    values = take_along(x, indices, axis)
    if flat:
        return values.reshape(())
    if not keep:
        values, indices = values.squeeze(axis), indices.squeeze(axis)
    return values if numpy_style else return_types.median(values, _indices_tensor(indices))


def gather(x, dim, index):
    """PyTorch's ``gather``: ``out[i][j] = x[index[i][j]][j]`` for ``dim=0`` (and so on); ``index`` is an
    integer tensor with ``x``'s number of dims. Repeated indices accumulate their gradients."""
    index_data = index.data if isinstance(index, Tensor) else index
    axis = _one_axis(dim, x, "gather")
    if getattr(index_data, "ndim", None) != x.ndim or index_data.dtype.kind not in "iu":
        raise ValueError(f"gather: index must be an integer tensor with {x.ndim} dims like the input "
                         f"{x.shape}, got {getattr(index_data, 'dtype', type(index_data).__name__)} "
                         f"of shape {getattr(index_data, 'shape', None)}")
    return take_along(x, index_data, axis, unique=False)


def values_and_indices(x, axis, keep, largest):
    """PyTorch's ``max(dim)``/``min(dim)``: the first extreme along ``axis`` and its index."""
    name = "max" if largest else "min"
    axis = _one_axis(axis, x, name)
    if x.ndim == 0:
        return _scalar_pick(x, getattr(return_types, name), False)
    _nonempty(x, axis, name)
    indices = (x.data.argmax if largest else x.data.argmin)(axis=axis, keepdims=True)
    values = take_along(x, indices, axis)
    if not keep:
        values, indices = values.squeeze(axis), indices.squeeze(axis)
    return getattr(return_types, name)(values, _indices_tensor(indices))
