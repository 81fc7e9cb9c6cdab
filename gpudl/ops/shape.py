"""Shape ops: reshape transpose permute squeeze unsqueeze expand, concat stack split chunk pad.

``dim=`` (or a positional dim) speaks PyTorch and ``axis=`` NumPy, never both in one call; where they
differ (``split``'s int, ``squeeze`` of a longer dim) the docstring says how.
"""
import itertools
import math

from ..autograd.function import Function
from ..tensor import Tensor
from ._util import UNSET, dims, normalize_axes


class Reshape(Function):
    is_view = True

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.in_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, g):
        return g.reshape(self.in_shape)


class Transpose(Function):
    is_view = True

    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, g):
        inverse = [0] * len(self.axes)
        for k, a in enumerate(self.axes):
            inverse[a] = k
        return g.transpose(inverse)


class BroadcastTo(Function):
    """Broadcast to a larger shape; the engine sums the gradient back to the input's shape."""

    is_view = True

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        return self.xp.broadcast_to(x, self.shape)

    def backward(self, g):
        return g


class Concat(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        self.bounds = []
        start = 0
        for x in xs:
            self.bounds.append((start, start + x.shape[self.axis]))
            start += x.shape[self.axis]
        return self.xp.concatenate(xs, axis=self.axis)

    def backward(self, g):
        index = [slice(None)] * g.ndim
        grads = []
        for needed, (lo, hi) in zip(self.needs_input_grad, self.bounds):
            index[self.axis] = slice(lo, hi)
            grads.append(g[tuple(index)] if needed else None)
        return tuple(grads)


class Stack(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        return self.xp.stack(xs, axis=self.axis)

    def backward(self, g):
        index = [slice(None)] * g.ndim
        grads = []
        for k, needed in enumerate(self.needs_input_grad):
            index[self.axis] = k
            grads.append(g[tuple(index)] if needed else None)
        return tuple(grads)


class Split(Function):
    """One input, several outputs (views of it); outputs nobody used contribute no gradient."""

    is_view = True

    def __init__(self, bounds, axis):
        self.bounds, self.axis = bounds, axis

    def forward(self, x):
        index = [slice(None)] * x.ndim
        outputs = []
        for lo, hi in self.bounds:
            index[self.axis] = slice(lo, hi)
            outputs.append(x[tuple(index)])
        self.in_shape, self.in_dtype = x.shape, x.dtype
        ends = [0] + [hi for _, hi in self.bounds]
        self.tiles = [lo for lo, _ in self.bounds] == ends[:-1] and ends[-1] == x.shape[self.axis] and all(
            lo <= hi for lo, hi in self.bounds)  # the parts cover the axis in order, without overlap
        return tuple(outputs)

    def backward(self, *grads):
        xp = self.xp
        if self.tiles:  # one pass that writes each element once (a missing gradient is zeros)
            return xp.concatenate([xp.zeros(self._part_shape(lo, hi), self.in_dtype) if g is None else g
                                   for g, (lo, hi) in zip(grads, self.bounds)], axis=self.axis)
        # added slice by slice: with decreasing split indices (as NumPy allows) the parts overlap
        gx = xp.zeros(self.in_shape, dtype=self.in_dtype)
        index = [slice(None)] * len(self.in_shape)
        for g, (lo, hi) in zip(grads, self.bounds):
            if g is not None:
                index[self.axis] = slice(lo, hi)
                gx[tuple(index)] += g
        return gx

    def _part_shape(self, lo, hi):
        shape = list(self.in_shape)
        shape[self.axis] = hi - lo
        return tuple(shape)


class Pad(Function):
    def __init__(self, pad_width, value):
        self.pad_width, self.value = pad_width, value

    def forward(self, x):
        return self.xp.pad(x, self.pad_width, mode="constant", constant_values=self.value)

    def backward(self, g):
        return g[tuple(slice(lo, g.shape[k] - hi) for k, (lo, hi) in enumerate(self.pad_width))]


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(n) for n in shape)


def reshape(x, *shape):
    """``x`` with a new shape (one entry may be -1); a view when the layout allows."""
    shape = _shape_arg(shape)
    known = math.prod(n for n in shape if n != -1)
    if shape.count(-1) > 1 or (-1 not in shape and known != x.size) or (
            -1 in shape and (known == 0 or x.size % known)):
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} ({x.size} elements) to {shape}")
    return Reshape(shape).apply(x)


def view(x, *shape):
    """PyTorch's name for ``reshape`` (a named function, so that it becomes the ``Tensor.view`` method)."""
    return reshape(x, *shape)


def view_as(x, other):
    """``x`` reshaped to ``other``'s shape (PyTorch's ``view_as``)."""
    return reshape(x, other.shape)


reshape_as = view_as


def flatten(x, start_dim=0, end_dim=-1):
    """Merge dimensions ``start_dim..end_dim`` (inclusive) into one."""
    if x.ndim == 0:
        return reshape(x, 1)
    start, end = normalize_axes((start_dim,), x.ndim, "flatten")[0], normalize_axes((end_dim,), x.ndim, "flatten")[0]
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    return reshape(x, x.shape[:start] + (math.prod(x.shape[start:end + 1]),) + x.shape[end + 1:])


def transpose(x, *axes):
    """Permute axes: no arguments reverse them (NumPy's ``.T``); two ints swap those two
    (PyTorch's ``transpose(d0, d1)``); a full permutation permutes."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    if not axes:
        perm = tuple(reversed(range(x.ndim)))
    elif len(axes) == 2:
        a, b = (normalize_axes((d,), x.ndim, "transpose")[0] for d in axes)
        perm = list(range(x.ndim))
        perm[a], perm[b] = perm[b], perm[a]
        perm = tuple(perm)
    else:
        perm = tuple(a % x.ndim for a in axes)
        if sorted(perm) != list(range(x.ndim)):
            raise ValueError(f"transpose: {axes} is not a permutation of the {x.ndim} axes of shape {x.shape}")
    return Transpose(perm).apply(x)


def permute(x, *axes):
    """Reorder the axes into ``axes`` (a full permutation)."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    perm = tuple(a % x.ndim for a in axes) if x.ndim else ()
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(f"permute: {axes} is not a permutation of the {x.ndim} axes of shape {x.shape}")
    return Transpose(perm).apply(x)


def swapaxes(x, axis1, axis2):
    """Swap two axes."""
    return transpose(x, axis1, axis2)


def squeeze(x, dim=None, *, axis=UNSET):
    """Remove dims of length 1 (all of them, or those named). A named dim longer than 1 is left as it
    is with ``dim=`` (PyTorch) and is an error with ``axis=`` (NumPy)."""
    axis, _, numpy_style = dims("squeeze", axis, dim)
    if axis is None:
        axes = tuple(k for k, n in enumerate(x.shape) if n == 1)
    else:
        axes = normalize_axes(axis, x.ndim, "squeeze")
        for a in axes:
            if x.shape[a] != 1 and numpy_style:
                raise ValueError(f"squeeze: axis {a} of shape {x.shape} has length {x.shape[a]}, not 1")
        axes = tuple(a for a in axes if x.shape[a] == 1)
    return reshape(x, tuple(n for k, n in enumerate(x.shape) if k not in axes))


def unsqueeze(x, dim=None, *, axis=UNSET):
    """Insert a dim of length 1 at position ``dim`` (NumPy's ``expand_dims``: ``axis=``)."""
    axis = dims("unsqueeze", axis, dim)[0]
    if not isinstance(axis, int) or not -x.ndim - 1 <= axis <= x.ndim:
        raise ValueError(f"unsqueeze: axis {axis!r} is out of range for a tensor with {x.ndim} dimensions")
    axis = axis % (x.ndim + 1)
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


expand_dims = unsqueeze


def broadcast_to(x, *shape):
    """``x`` broadcast to ``shape`` (a read-only view); -1 keeps a dimension (PyTorch's ``expand``)."""
    shape = _shape_arg(shape)
    lead = len(shape) - x.ndim
    if lead < 0:
        raise ValueError(f"broadcast_to: cannot broadcast shape {x.shape} to fewer dimensions {shape}")
    shape = tuple(x.shape[k - lead] if n == -1 and k >= lead else n for k, n in enumerate(shape))
    for k, n in enumerate(x.shape):
        if n != 1 and n != shape[lead + k]:
            raise ValueError(f"broadcast_to: cannot broadcast shape {x.shape} to {shape}")
    return BroadcastTo(shape).apply(x)


def expand(x, *shape):
    """PyTorch's name for ``broadcast_to`` (a named function, so that it becomes the ``Tensor.expand`` method)."""
    return broadcast_to(x, *shape)


def _check_same(tensors, op, axis):
    if not tensors:
        raise ValueError(f"{op}: needs at least one tensor")
    if not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"{op}: all inputs must be tensors")


def concat(tensors, dim=None, *, axis=UNSET):
    """Join tensors along an existing dim (``dim=`` or ``axis=``, default 0)."""
    tensors = list(tensors)
    _check_same(tensors, "concat", axis)
    axis = normalize_axes(dims("concat", axis, dim, default=0)[0], tensors[0].ndim, "concat")[0]
    for t in tensors[1:]:
        if t.ndim != tensors[0].ndim or any(
                a != b for k, (a, b) in enumerate(zip(t.shape, tensors[0].shape)) if k != axis):
            raise ValueError(f"concat: shapes {[u.shape for u in tensors]} differ outside axis {axis}")
    return Concat(axis).apply(*tensors)


cat = concat


def stack(tensors, dim=None, *, axis=UNSET):
    """Join tensors of equal shape along a new dim (``dim=`` or ``axis=``, default 0)."""
    tensors = list(tensors)
    _check_same(tensors, "stack", axis)
    if any(t.shape != tensors[0].shape for t in tensors):
        raise ValueError(f"stack: all tensors must have the same shape, got {[t.shape for t in tensors]}")
    axis = dims("stack", axis, dim, default=0)[0]
    if not isinstance(axis, int) or not -tensors[0].ndim - 1 <= axis <= tensors[0].ndim:
        raise ValueError(f"stack: axis {axis} out of range for {tensors[0].ndim + 1} output dimensions")
    return Stack(axis % (tensors[0].ndim + 1)).apply(*tensors)


def split(x, split_size_or_sections, dim=None, *, axis=UNSET):
    """Split into pieces along a dim (default 0); the pieces are views.

    PyTorch's vocabulary (``dim=``, a positional dim, or none): an int is the size of each piece (the
    last may be smaller), a list the sizes of the pieces (summing to the dim's length). NumPy's
    (``axis=``): an int is the number of equal pieces, a list the indices to cut at.
    """
    axis, _, numpy_style = dims("split", axis, dim, default=0)
    axis = normalize_axes(axis, x.ndim, "split")[0]
    n = x.shape[axis]
    spec = split_size_or_sections
    if numpy_style:
        cuts = _numpy_cuts(spec, n, axis)
    elif isinstance(spec, int):
        if spec <= 0:
            raise ValueError(f"split: the piece size must be positive, got {spec} (to split into a number of equal "
                             "pieces use axis= (NumPy) or chunk())")
        cuts = list(range(spec, n, spec))
    else:
        sizes = [int(c) for c in spec]
        if any(c < 0 for c in sizes) or sum(sizes) != n:
            raise ValueError(f"split: piece sizes {sizes} must be non-negative and sum to the length {n} of dim "
                             f"{axis} (shape {x.shape}); to cut at indices use axis= (NumPy)")
        cuts = list(itertools.accumulate(sizes))[:-1]
    return _split_at(x, cuts, axis)


def _numpy_cuts(spec, n, axis):
    if isinstance(spec, int):
        if spec <= 0 or n % spec:
            raise ValueError(f"split: axis {axis} of length {n} cannot be split into {spec} equal sections")
        step = n // spec
        return list(range(step, n, step))
    return [int(c) for c in spec]


def _split_at(x, cuts, axis):
    n = x.shape[axis]
    edges = [0] + [min(max(c, 0), n) for c in cuts] + [n]
    bounds = [(lo, max(lo, hi)) for lo, hi in zip(edges[:-1], edges[1:])]
    result = Split(bounds, axis).apply(x)
    return list(result) if isinstance(result, tuple) else [result]


def chunk(x, chunks, dim=0):
    """PyTorch's ``chunk``: at most ``chunks`` pieces of ``ceil(length / chunks)`` along ``dim`` (views)."""
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"chunk: chunks must be a positive integer, got {chunks!r}")
    axis = normalize_axes(dim, x.ndim, "chunk")[0]
    size = -(-x.shape[axis] // chunks)
    return _split_at(x, list(range(size, x.shape[axis], size)) if size else [], axis)


def pad(x, pad_width, value=0.0):
    """Pad with a constant: ``pad_width`` as in NumPy (an int, a pair, or one pair per axis)."""
    if isinstance(pad_width, int):
        widths = ((pad_width, pad_width),) * x.ndim
    elif len(pad_width) == 2 and all(isinstance(p, int) for p in pad_width):
        widths = (tuple(pad_width),) * x.ndim
    else:
        widths = tuple(tuple(int(v) for v in p) for p in pad_width)
    if len(widths) != x.ndim or any(len(p) != 2 or p[0] < 0 or p[1] < 0 for p in widths):
        raise ValueError(f"pad: pad_width {pad_width!r} does not give a non-negative (before, after) pair "
                         f"for each of the {x.ndim} axes of shape {x.shape}")
    return Pad(widths, value).apply(x)
