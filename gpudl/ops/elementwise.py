"""Elementwise math: exp log sqrt abs clip maximum minimum where, dtype and device moves."""
from .. import backend as _backend
from ..autograd.function import Function
from ..tensor import Tensor
from ._util import broadcast_error, operand


class Exp(Function):
    def forward(self, x):
        out = self.xp.exp(x)
        self.saved = (out,)
        return out

    def backward(self, g):
        return g * self.saved[0]


class Log(Function):
    def forward(self, x):
        self.saved = (x,)
        return self.xp.log(x)

    def backward(self, g):
        return g / self.saved[0]


class Sqrt(Function):
    def forward(self, x):
        out = self.xp.sqrt(x)
        self.saved = (out,)
        return out

    def backward(self, g):
        return g / (2 * self.saved[0])


class Abs(Function):
    def forward(self, x):
        self.saved = (x,)
        return self.xp.abs(x)

    def backward(self, g):
        x = self.saved[0]
        # PyTorch's sign: (x > 0) - (x < 0), 0 at NaN (NumPy's sign(NaN) is NaN)
        return g * ((x > 0).astype(g.dtype) - (x < 0).astype(g.dtype))


class Clip(Function):
    """Clip into ``[low, high]``; the gradient passes where ``low <= x <= high`` (as PyTorch's clamp)."""

    def __init__(self, low, high):
        self.low, self.high = low, high

    def forward(self, x):
        self.saved = (x,)
        return self.xp.clip(x, self.low, self.high)

    def backward(self, g):
        x = self.saved[0]
        inside = self.xp.ones(x.shape, dtype=bool)
        if self.low is not None:
            inside &= x >= self.low
        if self.high is not None:
            inside &= x <= self.high
        return g * inside


class Maximum(Function):
    """Elementwise maximum; on ties the gradient is split equally (as PyTorch)."""

    select = "greater"

    def forward(self, a, b):
        self.saved = (a, b)
        return self.xp.maximum(a, b) if self.select == "greater" else self.xp.minimum(a, b)

    def backward(self, g):
        a, b = self.saved
        wins = (a > b) if self.select == "greater" else (a < b)
        share = wins + (a == b) * 0.5
        share = share.astype(g.dtype)
        return (g * share if self.needs_input_grad[0] else None,
                g * (1 - share) if self.needs_input_grad[1] else None)


class Minimum(Maximum):
    select = "less"


class Where(Function):
    """``a`` where ``condition`` else ``b``."""

    def __init__(self, condition):
        self.condition = condition

    def forward(self, a, b):
        return self.xp.where(self.condition, a, b)

    def backward(self, g):
        zero = g.dtype.type(0)
        return (self.xp.where(self.condition, g, zero) if self.needs_input_grad[0] else None,
                self.xp.where(self.condition, zero, g) if self.needs_input_grad[1] else None)


class AsType(Function):
    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.source_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, g):
        return g.astype(self.source_dtype)


class ToDevice(Function):
    def __init__(self, device):
        self.device = device

    def forward(self, x):
        self.source_device = _backend.device_of(x)
        return _backend.to_device(x, self.device, copy=True)

    def backward(self, g):
        return _backend.to_device(g, self.source_device)


class Clone(Function):
    def forward(self, x):
        return x.copy()

    def backward(self, g):
        return g


def _unary(function_class, name, doc):
    def op(x):
        return function_class().apply(x)
    op.__name__ = name
    op.__doc__ = doc
    return op


exp = _unary(Exp, "exp", "Elementwise e**x.")
log = _unary(Log, "log", "Elementwise natural logarithm.")
sqrt = _unary(Sqrt, "sqrt", "Elementwise square root.")
abs = _unary(Abs, "abs", "Elementwise absolute value (gradient 0 at 0).")
clone = _unary(Clone, "clone", "A differentiable copy with its own storage.")


def clip(x, min=None, max=None):
    """Clip ``x`` into ``[min, max]`` (either bound may be None)."""
    if min is None and max is None:
        raise ValueError("clip: at least one of min and max must be given")
    return Clip(min, max).apply(x)


def clamp(x, min=None, max=None):
    """PyTorch's name for ``clip`` (a named function, so that it becomes the ``Tensor.clamp`` method)."""
    return clip(x, min, max)


def _pair(function_class, name):
    def op(a, b):
        reference = a if isinstance(a, Tensor) else b
        a, b = operand(a, reference), operand(b, reference)
        try:
            return function_class().apply(a, b)
        except ValueError as exc:
            raise broadcast_error(name, (a, b), exc) from None
    op.__name__ = name
    op.__doc__ = f"Elementwise {name} of two tensors (or a tensor and a scalar), broadcasting."
    return op


maximum = _pair(Maximum, "maximum")
minimum = _pair(Minimum, "minimum")


def where(condition, a, b):
    """Elementwise ``a if condition else b``; differentiable in ``a`` and ``b``."""
    reference = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else condition
    if not isinstance(reference, Tensor):
        raise TypeError("where: at least one argument must be a tensor")
    condition = operand(condition, reference)
    condition = condition.data if isinstance(condition, Tensor) else condition
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        return Tensor(reference.backend.xp.where(condition, a, b))
    a, b = operand(a, reference), operand(b, reference)
    try:
        return Where(condition).apply(a, b)
    except ValueError as exc:
        raise broadcast_error("where", (condition, a, b), exc) from None


def astype(x, dtype):
    """``x`` converted to ``dtype``; differentiable between float dtypes."""
    dtype = _backend.dtype(dtype)
    if x.requires_grad and dtype.kind != "f":
        return Tensor(x.data.astype(dtype))
    return AsType(dtype).apply(x)


def to_device(x, device):
    """``x`` copied to ``device``; differentiable."""
    return ToDevice(_backend.get_device(device)).apply(x)
