"""Adaptive average and max pooling (PyTorch's ``F.adaptive_avg_pool2d``/``F.adaptive_max_pool2d``).

Output cell ``i`` of a dim of length ``n`` pooled to ``m`` covers the inputs
``[floor(i * n / m), ceil((i + 1) * n / m))``, as in PyTorch. When ``m`` divides ``n`` these are
the windows of an ordinary pooling with kernel and stride ``n / m`` (the k² strided views of
``ops.pooling``). Otherwise the windows differ in size by at most one: one fancy-index gather
builds every window padded to the largest size (the padding repeats a window's last element), and
a masked mean or a first-maximum over the last dim pools them; gradients flow through both.
"""
from .. import backend as _backend
from ..tensor import Tensor
from .pooling import avg_pool2d, max_pool2d


def _output_size(op, output_size, in_hw):
    sizes = (output_size, output_size) if isinstance(output_size, int) or output_size is None else output_size
    if len(sizes) != 2:
        raise ValueError(f"{op}: output_size must be an int or a pair, got {output_size!r}")
    sizes = tuple(n if s is None else s for s, n in zip(sizes, in_hw))  # None keeps the input's size
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"{op}: output_size must hold positive integers (or None), got {output_size!r}")
    return sizes


def _windows(n, m):
    """Start and length of each of the ``m`` windows over ``n`` inputs."""
    starts = [i * n // m for i in range(m)]
    return starts, [-(-(i + 1) * n // m) - start for i, start in enumerate(starts)]


def _gathered(x, out_hw):
    """Every window of ``x`` [N, C, H, W] as [N, C, OH, OW, KH * KW] (short windows repeat their last
    element), and the [OH, OW, KH * KW] mask of the real elements."""
    device = x.device
    axes = []
    for n, m in zip(x.shape[2:], out_hw):
        starts, lengths = _windows(n, m)
        k = max(lengths)
        index = [[start + min(j, length - 1) for j in range(k)] for start, length in zip(starts, lengths)]
        real = [[j < length for j in range(k)] for length in lengths]
        axes.append((_backend.host_array_from_data(index), _backend.host_array_from_data(real), k))
    (rows, row_real, kh), (cols, col_real, kw) = axes
    rows = _backend.to_device(rows.reshape(out_hw[0], 1, kh, 1), device)
    cols = _backend.to_device(cols.reshape(1, out_hw[1], 1, kw), device)
    windows = x[:, :, rows, cols]                                   # [N, C, OH, OW, KH, KW]
    windows = windows.reshape(x.shape[0], x.shape[1], out_hw[0], out_hw[1], kh * kw)
    mask = (row_real.reshape(out_hw[0], 1, kh, 1) & col_real.reshape(1, out_hw[1], 1, kw))
    return windows, mask.reshape(out_hw[0], out_hw[1], kh * kw)


def _adaptive(op, input, output_size):
    if input.ndim not in (3, 4):
        raise ValueError(f"{op}: expected a 4-D input [N, C, H, W] (or 3-D [C, H, W]), got shape {input.shape}")
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: input must be floating point, got {input.dtype}")
    out_hw = _output_size(op, output_size, input.shape[-2:])
    even = all(n % m == 0 for n, m in zip(input.shape[-2:], out_hw))
    return out_hw, even, tuple(n // m for n, m in zip(input.shape[-2:], out_hw))


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed ``output_size`` (an int, a pair; None keeps that dim) for input
    [N, C, H, W] or [C, H, W], with PyTorch's windows."""
    out_hw, even, kernel = _adaptive("adaptive_avg_pool2d", input, output_size)
    if even:
        return avg_pool2d(input, kernel)
    if input.ndim == 3:
        return adaptive_avg_pool2d(input.unsqueeze(0), out_hw).squeeze(0)
    windows, mask = _gathered(input, out_hw)
    weights = mask / mask.sum(axis=-1, keepdims=True)
    return (windows * Tensor(_backend.to_device(weights.astype(input.dtype), input.device))).sum(dim=-1)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Max pooling to a fixed ``output_size`` (an int, a pair; None keeps that dim) for input
    [N, C, H, W] or [C, H, W], with PyTorch's windows; the gradient goes to the first maximum of a
    window. ``return_indices=True`` is not supported."""
    if return_indices:
        raise NotImplementedError("adaptive_max_pool2d: return_indices=True is not supported")
    out_hw, even, kernel = _adaptive("adaptive_max_pool2d", input, output_size)
    if even:
        return max_pool2d(input, kernel)
    if input.ndim == 3:
        return adaptive_max_pool2d(input.unsqueeze(0), out_hw).squeeze(0)
    windows, _ = _gathered(input, out_hw)   # repeats of a window's last element never change its maximum
    return windows.max(dim=-1).values
