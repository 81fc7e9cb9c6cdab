"""Convolution products in cache-sized blocks (gpudl.backend.native_conv): the same outputs and
gradients as the per-op form (whole im2col columns, one GEMM, col2im) for strides, padding,
dilation, non-square kernels, batch sizes, biases and dtypes, with blocks of whole output rows and
of pieces of a row; and where the blocked form is not used."""
import itertools

import numpy as np
import pytest

import gpudl
from gpudl.autograd import gradcheck
from gpudl.backend import fused_native, fused_numpy, native_conv
from gpudl.nn import functional as F
from tests.native_loop_helpers import native_or_skip, without_runner


def conv_results(dtype, shape, kernel, stride, padding, dilation, bias, groups=1):
    """Output and the gradients of input, weight and bias of one conv2d, as NumPy arrays."""
    n, c, o, hw = shape
    rng = np.random.default_rng(1)
    x = gpudl.tensor(rng.standard_normal((n, c, *hw)).astype(dtype), requires_grad=True)
    w = gpudl.tensor(rng.standard_normal((o, c // groups, *kernel)).astype(dtype), requires_grad=True)
    b = gpudl.tensor(rng.standard_normal(o).astype(dtype), requires_grad=True) if bias else None
    y = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    (y * gpudl.tensor(rng.standard_normal(y.shape).astype(dtype))).sum().backward()
    return [y.numpy(), x.grad.numpy(), w.grad.numpy()] + ([b.grad.numpy()] if bias else [])


@pytest.fixture
def per_op(monkeypatch):
    """Runs ``function()`` with the per-op form (no blocked runner)."""
    return without_runner(monkeypatch, "conv_runner")


# (N, C, O, (H, W)): the input gradient by col2im below 16 input channels, else transposed
CASES = list(itertools.product([(1, 1, 3, (7, 9)), (5, 4, 6, (10, 8)), (32, 16, 8, (14, 14))],
                               [(3, 3), (1, 1), (5, 3)], [1, 2], [0, 1, 2], [1, 2]))


@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("block_bytes", [native_conv.BLOCK_BYTES, 1000], ids=["rows", "row-pieces"])
def test_blocked_products_equal_the_per_op_form(monkeypatch, per_op, dtype, tolerance, block_bytes):
    native_or_skip()
    monkeypatch.setattr(native_conv, "BLOCK_BYTES", block_bytes)
    for shape, kernel, stride, padding, dilation in CASES:
        if min(size + 2 * padding - dilation * (k - 1) for size, k in zip(shape[3], kernel)) < 1:
            continue
        for bias in (True, False):
            run = lambda: conv_results(dtype, shape, kernel, stride, padding, dilation, bias)  # noqa: E731
            for blocked, reference in zip(run(), per_op(run), strict=True):
                scale = np.abs(reference).max()
                np.testing.assert_allclose(blocked, reference, rtol=tolerance, atol=tolerance * scale,
                                           err_msg=f"{shape} {kernel} {stride} {padding} {dilation} {bias}")


@pytest.mark.parametrize("kernel", [(2, 4), (4, 4)])
@pytest.mark.parametrize("dilation", [1, 2])
def test_same_padding_of_an_even_kernel_pads_unevenly_in_both_forms(per_op, kernel, dilation):
    native_or_skip()
    run = lambda: conv_results(np.float64, (3, 4, 5, (9, 7)), kernel, 1, "same", dilation, True)  # noqa: E731
    for blocked, reference in zip(run(), per_op(run), strict=True):
        assert blocked.shape == reference.shape
        np.testing.assert_allclose(blocked, reference, rtol=1e-12, atol=1e-12 * np.abs(reference).max())


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 0)])
def test_gradcheck_through_the_blocked_products(stride, padding):
    native_or_skip()
    assert fused_native.conv_runner(np.float64, (3, 2, 3, 2)) is not None
    rng = np.random.default_rng(2)
    x = gpudl.tensor(rng.standard_normal((2, 2, 5, 4)), requires_grad=True)
    w = gpudl.tensor(rng.standard_normal((3, 2, 3, 2)), requires_grad=True)
    b = gpudl.tensor(rng.standard_normal(3), requires_grad=True)
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding), x, w, b)


def test_float16_large_weights_and_groups_keep_the_per_op_form(per_op):
    native_or_skip()
    assert fused_native.conv_runner(np.float16, (8, 8, 3, 3)) is None
    assert fused_numpy.conv_runner(np.float32, (8, 8, 3, 3)) is None  # the twins write whole columns
    assert fused_native.conv_runner(np.float32, (128, 64, 3, 3)) is not None  # 0.29 MB: blocked
    assert fused_native.conv_runner(np.float32, (256, 256, 3, 3)) is None  # 2.4 MB: every block rereads
    runner = fused_native.conv_runner(np.float32, (8, 8, 3, 3))
    assert runner.transposes((4, 16, 9, 9), (1, 1)) and not runner.transposes((4, 3, 9, 9), (1, 1))
    assert not runner.transposes((4, 16, 9, 9), (2, 1))
    run = lambda: conv_results(np.float64, (3, 4, 6, (6, 6)), (3, 3), 1, 1, 1, True, groups=2)  # noqa: E731
    for grouped, reference in zip(run(), per_op(run), strict=True):
        np.testing.assert_array_equal(grouped, reference)  # groups > 1: the same per-op code both times


def test_runner_rejects_a_non_contiguous_array():
    native_or_skip()
    runner = fused_native.conv_runner(np.float32, (2, 1, 2, 2))
    x = np.zeros((1, 4, 4, 2), np.float32)
    w = np.zeros((4, 2), np.float32).T  # [2, 4] transposed view: not C-contiguous
    geometry = native_conv.geometry((2, 1, 4, 4), (2, 2), (3, 3), (1, 1), (0, 0, 0, 0), (1, 1))
    with pytest.raises(ValueError, match="C-contiguous float32"):
        runner.forward(x, w, None, np.zeros((2, 3, 3, 2), np.float32), geometry)
