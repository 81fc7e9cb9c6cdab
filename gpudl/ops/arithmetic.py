"""Arithmetic: + - * / neg ** and @."""
import math

from ..autograd.function import Function
from ._util import SCALAR_TYPES, broadcast_error, operand
from .linear import gemm


class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, g):
        return g, g


class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, g):
        return g, (-g if self.needs_input_grad[1] else None)


class Mul(Function):
    def forward(self, a, b):
        self.saved = (a, b)
        return a * b

    def backward(self, g):
        a, b = self.saved
        return (g * b if self.needs_input_grad[0] else None,
                g * a if self.needs_input_grad[1] else None)


class Div(Function):
    def forward(self, a, b):
        out = a / b
        self.saved = (b, out)
        return out

    def backward(self, g):
        b, out = self.saved
        ga = g / b
        return ga if self.needs_input_grad[0] else None, (-ga * out if self.needs_input_grad[1] else None)


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class Pow(Function):
    """``a ** b``; either side may be a Python scalar."""

    def forward(self, a, b):
        out = a ** b
        self.saved = (a, b, out)
        return out

    def backward(self, g):
        a, b, out = self.saved
        xp = self.xp
        ga = gb = None
        if self.needs_input_grad[0]:
            if type(b) in SCALAR_TYPES:
                ga = g * b * a ** (b - 1) if b != 0 else xp.zeros_like(g)  # d(a**0)/da = 0, also at a = 0
            else:
                ga = g * b * xp.power(a, b - 1)
        if self.needs_input_grad[1]:
            if type(a) in SCALAR_TYPES:
                log_a = math.log(a) if a > 0 else (0.0 if a == 0 else math.nan)
            else:
                log_a = xp.log(xp.where(a == 0, 1, a))
            # with log(0) taken as 0, d/db 0**b is 0, as in PyTorch
            gb = g * out * log_a
        return ga, gb


class MatMul(Function):
    """``a @ b`` for 1-D, 2-D and batched (broadcast) operands; the products go through
    :func:`~gpudl.ops.linear.gemm`, so on the CPU they run on gpudl's GEMM provider and threads."""

    def forward(self, a, b):
        self.saved = (a, b)
        return gemm(self.xp, a, b)

    def backward(self, g):
        a, b = self.saved
        xp = self.xp
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2 if b.ndim > 1 else 0)
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, -1)
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = gemm(xp, g2, xp.swapaxes(b2, -1, -2))
            ga = _reduce_batch(ga, a2.shape).reshape(a.shape)
        if self.needs_input_grad[1]:
            if b2.ndim == 2 and a2.ndim > 2:
                # one GEMM over the flattened batch instead of a stack that is then summed
                k = a2.shape[-1]
                gb = gemm(xp, a2.reshape(-1, k).T, g2.reshape(-1, g2.shape[-1]))
            else:
                gb = _reduce_batch(gemm(xp, xp.swapaxes(a2, -1, -2), g2), b2.shape)
            gb = gb.reshape(b.shape)
        return ga, gb


def _reduce_batch(grad, shape):
    """Sum the broadcast batch dimensions of a matmul gradient down to ``shape``."""
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + k for k, n in enumerate(shape[:-2]) if n == 1 and grad.shape[lead + k] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape) if axes else grad


def _binary(function_class, name):
    def op(a, b):
        reference = a if hasattr(a, "grad_fn") else b
        a, b = operand(a, reference), operand(b, reference)
        if not hasattr(a, "grad_fn") and not hasattr(b, "grad_fn"):
            raise TypeError(f"{name}: at least one operand must be a tensor")
        try:
            return function_class().apply(a, b)
        except ValueError as exc:
            if "broadcast" in str(exc) or "shape" in str(exc):
                raise broadcast_error(name, (a, b), exc) from None
            raise
    op.__name__ = name
    op.__doc__ = f"Elementwise {name} with broadcasting; Python scalars keep the tensor's dtype."
    return op


add = _binary(Add, "add")
sub = _binary(Sub, "sub")
mul = _binary(Mul, "mul")
div = _binary(Div, "div")
pow = _binary(Pow, "pow")


def neg(a):
    """``-a``."""
    return Neg().apply(a)


def matmul(a, b):
    """Matrix product ``a @ b``: 1-D (dot / matrix-vector), 2-D, or batched with broadcasting."""
    reference = a if hasattr(a, "grad_fn") else b
    a, b = operand(a, reference), operand(b, reference)
    if not hasattr(a, "grad_fn") or not hasattr(b, "grad_fn"):
        raise TypeError("matmul: both operands must be tensors or arrays, not scalars")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least 1 dimension, got shapes {a.shape} and {b.shape}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(f"matmul: inner dimensions differ: shapes {a.shape} and {b.shape} ({k_a} != {k_b})")
    try:
        return MatMul().apply(a, b)
    except ValueError as exc:
        raise broadcast_error("matmul", (a, b), exc) from None
