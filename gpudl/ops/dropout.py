"""Dropout from a counter-based hash: the mask is a function of (seed, step, element index),
so it is identical on both backends and never stored — backward recomputes it."""
from .. import backend as _backend
from ..autograd.function import Function


class Dropout(Function):
    def __init__(self, p, seed, step):
        self.p, self.seed, self.step = p, seed, step

    def forward(self, x):
        return self.backend.fused.dropout_forward(x, self.p, self.seed, self.step)

    def backward(self, g):
        return self.backend.fused.dropout_backward(g, self.p, self.seed, self.step)


def dropout(x, p=0.5, training=True):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p); identity when
    not ``training``. Masks follow ``gpudl.manual_seed`` and advance with every call."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if x.dtype.kind != "f":
        raise TypeError(f"dropout: expected a floating-point tensor, got dtype {x.dtype}")
    if not training or p == 0.0:
        return x
    seed, step = _backend.next_dropout_key()
    return Dropout(p, seed, step).apply(x)
