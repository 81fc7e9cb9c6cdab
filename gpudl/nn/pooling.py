"""Pooling layers: ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d`` and ``AdaptiveMaxPool2d``."""
from ..ops.adaptive_pooling import adaptive_avg_pool2d, adaptive_max_pool2d
from ..ops.pooling import avg_pool2d, max_pool2d
from .module import Module


class MaxPool2d(Module):
    """Max over k×k windows (``stride`` defaults to ``kernel_size``); padding is never a candidate and
    may be at most half the kernel; ``ceil_mode`` keeps a last partial window. The gradient goes to
    the first maximum of each window (the last NaN, if any), as PyTorch."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.dilation, self.ceil_mode = padding, dilation, ceil_mode

    def forward(self, x):
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


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


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed ``output_size`` (an int or a pair; None keeps that dim), whatever the
    input's size, with PyTorch's windows."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """Max pooling to a fixed ``output_size`` (an int or a pair; None keeps that dim), whatever the
    input's size, with PyTorch's windows; the gradient goes to the first maximum of each window."""

    def __init__(self, output_size, return_indices=False):
        super().__init__()
        if return_indices:
            raise NotImplementedError("AdaptiveMaxPool2d: return_indices=True is not supported")
        self.output_size = output_size

    def forward(self, x):
        return adaptive_max_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"
