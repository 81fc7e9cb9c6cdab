"""Pooling layers: ``MaxPool2d`` and ``AvgPool2d``."""
from ..ops.pooling import avg_pool2d, max_pool2d
from .module import Module


class MaxPool2d(Module):
    """Max over k×k windows (``stride`` defaults to ``kernel_size``); padding counts as -inf and may be
    at most half the kernel. The gradient goes to the first maximum of each window, as PyTorch."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.dilation = padding, dilation

    def forward(self, x):
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}")


class AvgPool2d(Module):
    """Mean over k×k windows (``stride`` defaults to ``kernel_size``); zero padding counts in the
    divisor unless ``count_include_pad=False``."""

    def __init__(self, kernel_size, stride=None, padding=0, *, count_include_pad=True):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.count_include_pad = padding, count_include_pad

    def forward(self, x):
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding, count_include_pad=self.count_include_pad)

    def extra_repr(self):
        text = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        return text if self.count_include_pad else text + ", count_include_pad=False"
