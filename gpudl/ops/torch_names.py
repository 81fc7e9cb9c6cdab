"""PyTorch's names for compositions of existing ops: ``mm``, ``bmm``, ``t``, ``masked_fill``, ``repeat``,
``norm``, ``contiguous``, ``numel``, ``is_tensor``. Each is built from differentiable ops, so each has
gradients without a backward of its own."""
from ..tensor import Tensor
from ._util import UNSET, dims
from .arithmetic import matmul
from .elementwise import abs, sqrt, where
from .reduction import amax, sum
from .shape import broadcast_to, reshape, transpose


def mm(input, mat2):
    """Matrix product of two 2-D tensors (PyTorch's ``mm``; ``matmul`` also broadcasts)."""
    if input.ndim != 2 or mat2.ndim != 2:
        raise ValueError(f"mm: expected two 2-D tensors, got shapes {input.shape} and {mat2.shape}")
    return matmul(input, mat2)


def bmm(input, mat2):
    """Batched matrix product of [B, N, M] and [B, M, P] tensors (PyTorch's ``bmm``)."""
    if input.ndim != 3 or mat2.ndim != 3 or input.shape[0] != mat2.shape[0]:
        raise ValueError(f"bmm: expected 3-D tensors with the same batch size, got shapes {input.shape} and "
                         f"{mat2.shape}")
    return matmul(input, mat2)


def t(input):
    """The transpose of a tensor of at most 2 dims (PyTorch's ``t``)."""
    if input.ndim > 2:
        raise ValueError(f"t: expects a tensor of at most 2 dims, got shape {input.shape}; use transpose(d0, d1)")
    return transpose(input) if input.ndim == 2 else input


def masked_fill(input, mask, value):
    """``input`` with ``value`` where the bool ``mask`` (broadcast to its shape) is True."""
    mask_data = mask.data if isinstance(mask, Tensor) else mask
    if getattr(mask_data, "dtype", None) is None or mask_data.dtype.kind != "b":
        raise TypeError(f"masked_fill: mask must be a bool tensor, got {getattr(mask_data, 'dtype', type(mask))}")
    if isinstance(value, Tensor):
        value = value.to(dtype=input.dtype)
    return where(mask, value, input)


def repeat(input, *sizes):
    """PyTorch's ``repeat``: tile ``input`` ``sizes[d]`` times along each dim (extra leading sizes add dims)."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    if len(sizes) < input.ndim or any(not isinstance(s, int) or s < 0 for s in sizes):
        raise ValueError(f"repeat: needs one non-negative int per dim of shape {input.shape} (or more), got {sizes}")
    shape = (1,) * (len(sizes) - input.ndim) + tuple(input.shape)
    interleaved = reshape(input, [n for length in shape for n in (1, length)])
    tiled = broadcast_to(interleaved, [n for size, length in zip(sizes, shape) for n in (size, length)])
    return reshape(tiled, [size * length for size, length in zip(sizes, shape)])


def norm(input, p=2, dim=None, keepdim=None, *, axis=UNSET, keepdims=None):
    """The ``p``-norm over ``dim`` (all elements by default): ``p`` is a positive number or ``inf``.
    The gradient of the 2-norm at a zero vector is 0 (a subgradient), as in PyTorch."""
    axis, keep, _ = dims("norm", axis, dim, keepdims, keepdim)
    if p == float("inf"):
        return amax(abs(input), dim=axis, keepdim=keep)
    if not p > 0:
        raise ValueError(f"norm: p must be positive or inf, got {p!r}")
    if p == 2:
        squares = sum(input * input, dim=axis, keepdim=keep)
        safe = where(squares > 0, squares, 1.0)           # sqrt's gradient at 0 is infinite: route around it
        return where(squares > 0, sqrt(safe), 0.0)
    if p == 1:
        return sum(abs(input), dim=axis, keepdim=keep)
    return sum(abs(input) ** p, dim=axis, keepdim=keep) ** (1.0 / p)


def contiguous(input):
    """``input`` itself when its data is C-contiguous, else a contiguous copy (PyTorch's ``contiguous``)."""
    return input if input.data.flags.c_contiguous else input.clone()


def numel(input) -> int:
    """The number of elements (PyTorch's ``torch.numel``)."""
    return input.numel()


def is_tensor(obj) -> bool:
    """True for a gpudl ``Tensor``."""
    return isinstance(obj, Tensor)
