"""Activations, each one fused kernel forward and one backward (``backend.fused``)."""
from ..autograd.function import Function


class Activation(Function):
    """``name``'s fused forward; backward from what ``fused.ACTIVATION_BACKWARD_USES`` says it needs."""

    def __init__(self, name, **params):
        self.name, self.params = name, params

    @property
    def op_name(self):
        return self.name

    def forward(self, x):
        y = self.backend.fused.activation_forward(self.name, x, **self.params)
        self.saved = (y,) if self.backend.fused.ACTIVATION_BACKWARD_USES[self.name] == "y" else (x,)
        return y

    def backward(self, g):
        fused = self.backend.fused
        if fused.ACTIVATION_BACKWARD_USES[self.name] == "y":
            return fused.activation_backward(self.name, None, self.saved[0], g, **self.params)
        return fused.activation_backward(self.name, self.saved[0], None, g, **self.params)


def _apply(name, x, **params):
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype} (shape {x.shape})")
    return Activation(name, **params).apply(x)


def relu(x):
    """max(x, 0); NaN stays NaN, the gradient at 0 is 0."""
    return _apply("relu", x)


def leaky_relu(x, negative_slope=0.01):
    """x for x > 0, else negative_slope * x."""
    return _apply("leaky_relu", x, negative_slope=negative_slope)


def elu(x, alpha=1.0):
    """x for x > 0, else alpha * (exp(x) - 1)."""
    return _apply("elu", x, alpha=alpha)


def sigmoid(x):
    """1 / (1 + exp(-x)), computed without overflow."""
    return _apply("sigmoid", x)


def tanh(x):
    """Hyperbolic tangent."""
    return _apply("tanh", x)


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, linear where beta x > threshold (as PyTorch)."""
    return _apply("softplus", x, beta=beta, threshold=threshold)


def gelu(x, approximate="none"):
    """Gaussian error linear unit: exact with erf (``"none"``) or the tanh approximation (``"tanh"``)."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _apply("gelu" if approximate == "none" else "gelu_tanh", x)


def silu(x):
    """x * sigmoid(x) (also called swish)."""
    return _apply("silu", x)
