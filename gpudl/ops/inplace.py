"""What ``fill_``, ``zero_`` and ``copy_`` compute under autograd: the old values are replaced.

The result never reads the old values (a ``0 * old + value`` formulation would turn ±inf and NaN
into NaN), and the old values get an explicit zero gradient, as PyTorch's ``fill_``/``copy_``
backward does: a NaN upstream (``log``'s ``0/0`` at 0) then shows in the leaf's gradient exactly as
in PyTorch.
"""
from ..autograd.function import Function


class Overwrite(Function):
    """``(old, source) -> source`` broadcast to ``old``'s shape and cast to its dtype; ``source`` is a
    tensor or a Python scalar. Gradients: zeros for ``old``, the output gradient for ``source`` (the
    engine sums it over broadcast axes and casts it to ``source``'s dtype)."""

    def forward(self, old, source):
        out = self.xp.empty_like(old)
        out[...] = source
        return out

    def backward(self, g):
        return (self.xp.zeros_like(g) if self.needs_input_grad[0] else None,
                g if self.needs_input_grad[1] else None)


def overwrite(old, source):
    """The values of ``source`` in place of ``old`` (differentiable; see :class:`Overwrite`)."""
    return Overwrite().apply(old, source)
