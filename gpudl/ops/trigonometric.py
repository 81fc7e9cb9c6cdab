"""Elementwise ``sin`` and ``cos`` with gradients (PyTorch scripts build signals with them)."""
from ..autograd.function import Function
from .elementwise import _unary


class Sin(Function):
    def forward(self, x):
        self.saved = (x,)
        return self.xp.sin(x)

    def backward(self, g):
        return g * self.xp.cos(self.saved[0])


class Cos(Function):
    def forward(self, x):
        self.saved = (x,)
        return self.xp.cos(x)

    def backward(self, g):
        return -g * self.xp.sin(self.saved[0])


sin = _unary(Sin, "sin", "Elementwise sine.")
cos = _unary(Cos, "cos", "Elementwise cosine.")
