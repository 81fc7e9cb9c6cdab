"""``Conv2d``: 2-D convolution layer (cross-correlation, as PyTorch)."""
from ..ops.conv import conv2d, conv_padding, pair, positive_pair
from .linear import check_size, reset_weight_and_bias
from .module import Module
from .parameter import empty_parameter


class Conv2d(Module):
    """2-D convolution over input [N, C, H, W] (or [C, H, W]).

    weight [out_channels, in_channels/groups, kh, kw] and bias [out_channels], initialised as
    PyTorch (``kaiming_uniform_(a=sqrt(5))``, bias U(±1/sqrt(fan_in))). ``padding`` is an int, a
    pair, ``'valid'`` or ``'same'``; only ``padding_mode='zeros'`` is supported.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        owner = "Conv2d"
        self.in_channels = check_size(in_channels, "in_channels", owner)
        self.out_channels = check_size(out_channels, "out_channels", owner)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or in_channels % groups \
                or out_channels % groups:
            raise ValueError(f"{owner}: groups={groups!r} must be a positive int dividing in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        if padding_mode != "zeros":
            raise NotImplementedError(f"{owner}: padding_mode={padding_mode!r} is not supported; only 'zeros'")
        self.kernel_size = positive_pair(kernel_size, "kernel_size", owner)
        self.stride = positive_pair(stride, "stride", owner)
        self.dilation = positive_pair(dilation, "dilation", owner)
        conv_padding(padding, self.kernel_size, self.dilation, self.stride, owner)  # validate now, not at first call
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding", owner)
        self.groups = groups
        self.padding_mode = padding_mode
        self.weight = empty_parameter((out_channels, in_channels // groups) + self.kernel_size, device, dtype, owner)
        if bias:
            self.bias = empty_parameter((out_channels,), device, dtype, owner)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """Draw fresh initial values (PyTorch's default initialisation)."""
        reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x):
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text
