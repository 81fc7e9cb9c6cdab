"""Embedding lookup: rows of a table picked by integer indices; backward scatter-adds into the table."""
from .. import backend as _backend
from ..autograd.function import Function
from ._util import as_tensor_like


class Embedding(Function):
    """``weight[indices]``; the gradient of a row is the sum over every position that picked it,
    except the ``padding_idx`` row, which gets none."""

    def __init__(self, indices, padding_idx):
        self.indices, self.padding_idx = indices, padding_idx

    def forward(self, weight):
        self.weight_shape = weight.shape
        # a bad index has been reported (at once on the CPU, at the next sync on the GPU);
        # clipping keeps the gather and the scatter in bounds until then
        self.indices = self.xp.clip(self.indices, 0, weight.shape[0] - 1)
        return self.xp.take(weight, self.indices, axis=0)

    def backward(self, grad):
        xp = self.xp
        gw = xp.zeros(self.weight_shape, dtype=grad.dtype)
        xp.add.at(gw, self.indices.reshape(-1), grad.reshape(-1, self.weight_shape[1]))
        if self.padding_idx is not None:
            gw[self.padding_idx] = 0
        return gw


def check_indices(indices, count, what, ignore_index=None):
    """Raise if an entry of the integer array ``indices`` is outside ``[0, count)`` (``ignore_index`` aside).

    The backend does the check: at once on the CPU; on the GPU, where a wrong index would silently
    wrap, it is recorded on the device and raised at the next host sync (no sync in the step).
    """
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integers, got dtype {indices.dtype}")
    _backend.backend_of(indices).fused.check_class_indices(indices, count, ignore_index, what)


def embedding(input, weight, padding_idx=None):
    """Rows of ``weight`` [num_embeddings, dim] picked by the integer indices ``input`` (any shape);
    returns ``input.shape + (dim,)`` (PyTorch's ``F.embedding``). Row ``padding_idx`` gets no gradient."""
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D [num_embeddings, embedding_dim], got shape {weight.shape}")
    indices = as_tensor_like(input, weight)
    if indices.device != weight.device:
        raise RuntimeError(f"embedding: the indices are on {indices.device} but the weight is on {weight.device}")
    num = weight.shape[0]
    if padding_idx is not None:
        if not -num <= padding_idx < num:
            raise ValueError(f"embedding: padding_idx {padding_idx} is out of range for {num} embeddings")
        padding_idx %= num
    check_indices(indices.data, num, "embedding index")
    return Embedding(indices.data, padding_idx).apply(weight)
