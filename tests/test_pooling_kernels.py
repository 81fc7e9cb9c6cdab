"""Max pooling's fused kernels (kernels/pooling.cuh, gpudl.backend.pooling_kernels).

The NumPy twin against a per-window definition of PyTorch's semantics (padding never a candidate,
first of tied maxima, last NaN, a window of -inf records its first real tap); the compiled host
kernels against the twin bit for bit in float16/32/64 with ties, NaN, -inf, padding, overlapping
and dilated windows, batch 1, odd sizes, every input layout, int8 and int32 taps, past the OpenMP
threshold, and launched as on the host (a run along N per index) and as on the GPU (one element);
argument errors; ``F.max_pool2d`` on every CPU kernel path and on the device (the CuPy double in
CI): values, NaN routing and a gradcheck; PyTorch's values and gradients (in .venv-torch).
"""
import types

import numpy as np
import pytest

import gpudl as gd
from gpudl.autograd import gradcheck
from gpudl.backend import fused_numpy, host_compiler, pooling_kernels as twin
from gpudl.nn import functional as F

from tests.conftest import to_numpy

DTYPES = ["float16", "float32", "float64"]
_HAS_COMPILER = bool(host_compiler.shutil.which(host_compiler.compiler()))
needs_compiler = pytest.mark.skipif(not _HAS_COMPILER, reason=f"no C++ compiler {host_compiler.compiler()!r} on "
                                                               "PATH: the CPU kernels cannot be built")

CASES = [  # kernel, stride, (pad_h, pad_w), dilation
    ((2, 2), (2, 2), (0, 0), (1, 1)),   # the bench CNN's: windows tile the input
    ((3, 3), (1, 1), (1, 1), (1, 1)),   # overlapping, padded
    ((3, 3), (2, 2), (1, 1), (1, 1)),   # overlapping with stride 2
    ((3, 2), (2, 1), (1, 1), (1, 1)),
    ((2, 2), (1, 3), (1, 0), (2, 2)),   # dilated
    ((1, 1), (2, 2), (0, 0), (1, 1)),   # windows skip elements: their gradient is 0
]
SHAPES = [(1, 1, 5, 5), (3, 2, 7, 6), (33, 3, 9, 8), (64, 2, 8, 8), (67, 2, 5, 6)]  # N 67: host runs 64 + 3


def pads_of(padding):
    return (padding[0], padding[0], padding[1], padding[1])


def out_hw(shape, kernel, stride, padding, dilation, ceil_mode=False):
    """PyTorch's output size; with ``ceil_mode`` a last partial window that starts inside the input."""
    sizes = []
    for size, p, d, k, s in zip(shape[2:], padding, dilation, kernel, stride):
        span = size + 2 * p - d * (k - 1) - 1
        out = (-(-span // s) if ceil_mode else span // s) + 1
        sizes.append(out - 1 if ceil_mode and (out - 1) * s >= size + p else out)
    return tuple(sizes)


def awkward_input(shape, dtype, seed=0):
    """Values on a coarse grid (many ties), with NaNs, -infs and some windows wholly -inf."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal(shape) * 2) / 2
    x[rng.random(shape) < 0.03] = np.nan
    x[rng.random(shape) < 0.05] = -np.inf
    x[..., :2, :2] = -np.inf
    return x.astype(dtype)


def reference(x, kernel, stride, padding, dilation, ceil_mode=False):
    """``(y, index)`` [C, OH, OW, N] by the definition, one window position at a time."""
    n, c, h, w = x.shape
    oh, ow = out_hw(x.shape, kernel, stride, padding, dilation, ceil_mode)
    y = np.zeros((n, c, oh, ow), x.dtype)
    index = np.zeros((n, c, oh, ow), np.int64)
    for a in range(oh):
        for b in range(ow):
            best, arg, seen = np.zeros((n, c), x.dtype), np.zeros((n, c), np.int64), False
            for ki in range(kernel[0]):
                for kj in range(kernel[1]):
                    ih, iw = a * stride[0] - padding[0] + ki * dilation[0], b * stride[1] - padding[1] + kj * dilation[1]
                    if not (0 <= ih < h and 0 <= iw < w):
                        continue
                    v = x[:, :, ih, iw]
                    with np.errstate(invalid="ignore"):
                        take = (v > best) | np.isnan(v) | (not seen)
                    best, arg, seen = np.where(take, v, best), np.where(take, ki * kernel[1] + kj, arg), True
            y[:, :, a, b], index[:, :, a, b] = best, arg
    return y.transpose(1, 2, 3, 0), index.transpose(1, 2, 3, 0)


def reference_grad(gy, index, x_shape, kernel, stride, padding, dilation):
    """The input gradient [C, H, W, N]: each window's gradient added to the input its tap read."""
    n, c, h, w = x_shape
    gx = np.zeros((c, h, w, n))
    for ci, a, b, ni in np.ndindex(*gy.shape):
        ki, kj = divmod(int(index[ci, a, b, ni]), kernel[1])
        gx[ci, a * stride[0] - padding[0] + ki * dilation[0], b * stride[1] - padding[1] + kj * dilation[1], ni] += \
            gy[ci, a, b, ni]
    return gx


def layouts(x):
    """``x`` [N, C, H, W] as the layouts the kernels read: batch-last, NCHW and a non-dense view."""
    batch_last = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    wide = np.zeros(x.shape[:3] + (2 * x.shape[3],), x.dtype)
    wide[..., ::2] = x
    return {"batch-last": batch_last, "nchw": np.ascontiguousarray(x), "strided": wide[..., ::2]}


def run(module, x, kernel, stride, padding, dilation, gy, ceil_mode=False):
    """``(y, index, gx)`` of ``module``'s max_pool2d_forward/backward."""
    pads = pads_of(padding)
    y, index = module.max_pool2d_forward(x, kernel, stride, pads, dilation,
                                         out_hw(x.shape, kernel, stride, padding, dilation, ceil_mode), True)
    return y, index, module.max_pool2d_backward(gy, index, x.shape, kernel, stride, pads, dilation)


def output_gradient(x, kernel, stride, padding, dilation, seed=1, ceil_mode=False):
    """Small whole numbers: every sum of them is exact, in any order and dtype."""
    n, c = x.shape[:2]
    shape = (c, *out_hw(x.shape, kernel, stride, padding, dilation, ceil_mode), n)
    return np.random.default_rng(seed).integers(-8, 9, shape).astype(x.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, padding, dilation", CASES)
def test_twin_matches_the_definition(dtype, kernel, stride, padding, dilation):
    x = awkward_input((3, 2, 7, 6), dtype)
    gy = output_gradient(x, kernel, stride, padding, dilation)
    y, index, gx = run(twin, x, kernel, stride, padding, dilation, gy)
    y_want, index_want = reference(x, kernel, stride, padding, dilation)
    assert y.dtype == x.dtype and y.flags.c_contiguous and index.dtype == np.int8 and gx.dtype == x.dtype
    np.testing.assert_array_equal(y, y_want)
    np.testing.assert_array_equal(index, index_want)
    np.testing.assert_array_equal(gx, reference_grad(gy, index_want, x.shape, kernel, stride, padding, dilation))


@pytest.mark.parametrize("kernel, stride, padding", [((3, 3), (2, 2), (0, 1)), ((2, 3), (3, 2), (1, 1))])
def test_ceil_mode_partial_windows(kernel, stride, padding):
    """Output sizes that keep a last partial window (7x6 input): twin against the definition, and the
    native kernels against the twin."""
    x = awkward_input((3, 2, 7, 6), "float32", seed=7)
    assert out_hw(x.shape, kernel, stride, padding, (1, 1), True) != out_hw(x.shape, kernel, stride, padding, (1, 1))
    gy = output_gradient(x, kernel, stride, padding, (1, 1), ceil_mode=True)
    got = run(twin, x, kernel, stride, padding, (1, 1), gy, ceil_mode=True)
    y_want, index_want = reference(x, kernel, stride, padding, (1, 1), ceil_mode=True)
    np.testing.assert_array_equal(got[0], y_want)
    np.testing.assert_array_equal(got[1], index_want)
    np.testing.assert_array_equal(got[2], reference_grad(gy, index_want, x.shape, kernel, stride, padding, (1, 1)))
    if _HAS_COMPILER:
        from gpudl.backend import fused_native
        for g, w in zip(run(fused_native, x, kernel, stride, padding, (1, 1), gy, ceil_mode=True), got):
            np.testing.assert_array_equal(g, w)


def test_twin_semantics_on_one_window():
    """Ties: the first; NaN: the last one, and it propagates; all -inf: the first real tap."""
    window = {"tie": [1.0, 3.0, 3.0, 0.0], "nan": [1.0, np.nan, 3.0, np.nan], "-inf": [-np.inf] * 4}
    for name, values in window.items():
        x = np.array(values).reshape(1, 1, 2, 2)
        y, index = twin.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), (1, 1), True)
        assert int(index[0, 0, 0, 0]) == {"tie": 1, "nan": 3, "-inf": 0}[name], name
    x = np.array([[[[-np.inf, -np.inf, 2.0]]]])  # padding left of a -inf window is never the winner
    y, index = twin.max_pool2d_forward(x, (1, 3), (1, 1), (0, 0, 1, 1), (1, 1), (1, 3), True)
    np.testing.assert_array_equal(y.ravel(), [-np.inf, 2, 2])
    np.testing.assert_array_equal(index.ravel(), [1, 2, 1])


def gpu_launch():
    """The native kernels launched as the GPU launches them: one element per index (run 1)."""
    from gpudl.backend import native_kernels
    forward, backward = twin.bind(native_kernels.kernel, np, lambda batch: 1)
    return types.SimpleNamespace(max_pool2d_forward=forward, max_pool2d_backward=backward)


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, padding, dilation", CASES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_native_matches_twin(dtype, kernel, stride, padding, dilation, shape):
    from gpudl.backend import fused_native
    x = awkward_input(shape, dtype)
    gy = output_gradient(x, kernel, stride, padding, dilation)
    want = run(twin, x, kernel, stride, padding, dilation, gy)
    views = layouts(x)
    runs = [("host", fused_native, layout, view) for layout, view in views.items()]
    for launch, module, layout, view in runs + [("gpu", gpu_launch(), "batch-last", views["batch-last"])]:
        got = run(module, view, kernel, stride, padding, dilation, gy)
        for name, g, w in zip(("y", "index", "gx"), got, want):
            assert g.dtype == w.dtype and g.flags.c_contiguous, f"{launch} {layout} {name}"
            np.testing.assert_array_equal(g, w, err_msg=f"{launch} {layout} {name}")


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
def test_native_matches_twin_with_int32_taps_and_on_threads(dtype):
    """A 12x12 window (144 taps: int32 indices), and a layer of 57600 indices (past
    native_kernels.PARALLEL_MIN: the OpenMP threads)."""
    from gpudl.backend import fused_native
    for shape, kernel, stride, padding in [((3, 2, 13, 14), (12, 12), (1, 1), (0, 0)),
                                           ((2, 64, 30, 30), (3, 3), (1, 1), (1, 1))]:
        x = awkward_input(shape, dtype, seed=2)
        gy = output_gradient(x, kernel, stride, padding, (1, 1))
        got = run(fused_native, x, kernel, stride, padding, (1, 1), gy)
        want = run(twin, x, kernel, stride, padding, (1, 1), gy)
        assert got[1].dtype == twin.index_dtype(kernel) == np.dtype(np.int8 if kernel == (3, 3) else np.int32)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("module", ["twin", "native"])
def test_without_keep_index_no_taps_are_returned(module):
    if module == "native" and not _HAS_COMPILER:
        pytest.skip("no C++ compiler: the CPU kernels cannot be built")
    from gpudl.backend import fused_native
    x = awkward_input((2, 3, 6, 6), "float32")
    y, index = (twin if module == "twin" else fused_native).max_pool2d_forward(
        x, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), (3, 3), False)
    assert index is None
    np.testing.assert_array_equal(y, reference(x, (2, 2), (2, 2), (0, 0), (1, 1))[0])


def test_argument_errors():
    x = np.zeros((2, 3, 6, 6), np.float32)
    pool = ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1))
    with pytest.raises(TypeError, match="max_pool2d: expected a float16/float32/float64 input, got int32"):
        twin.max_pool2d_forward(x.astype(np.int32), *pool, (3, 3), True)
    with pytest.raises(ValueError, match=r"max_pool2d: output size \(4, 3\) does not fit an input of shape "
                                         r"\(2, 3, 6, 6\) .* \(output size \(3, 3\)\)"):
        twin.max_pool2d_forward(x, *pool, (4, 3), True)
    y, index = twin.max_pool2d_forward(x, *pool, (3, 3), True)
    with pytest.raises(ValueError, match=r"max_pool2d backward: output size \(2, 3\) does not fit an input"):
        twin.max_pool2d_backward(y[:, :2], index, x.shape, *pool)
    with pytest.raises(ValueError, match=r"max_pool2d backward: the output gradient must be \[C, OH, OW, N\] = "
                                         r"\(3, 3, 3, 2\) of dtype float32, got \(3, 3, 3, 1\) float32"):
        twin.max_pool2d_backward(y[..., :1], index, x.shape, *pool)
    with pytest.raises(ValueError, match=r"the recorded taps must be \[C, OH, OW, N\] = \(3, 3, 3, 2\) of dtype "
                                         r"int8, got \(3, 3, 3, 2\) int32"):
        twin.max_pool2d_backward(y, index.astype(np.int32), x.shape, *pool)


@pytest.mark.parametrize("path", ["numpy", "native"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_on_each_cpu_path(monkeypatch, path, dtype):
    """F.max_pool2d forward and backward on the twins (GPUDL_CPU_KERNELS=numpy) and on the compiled
    kernels: the definition's values; the gradient of a window goes to its last NaN."""
    if path == "native" and not _HAS_COMPILER:
        pytest.skip("no C++ compiler: the CPU kernels cannot be built")
    from gpudl import backend
    from gpudl.backend import fused_native
    monkeypatch.setattr(backend.NUMPY, "fused", fused_native if path == "native" else fused_numpy)
    x_host = awkward_input((2, 3, 7, 7), dtype, seed=3)
    x_host[0, 0, 2:4, 2:4] = [[np.nan, 1], [np.nan, 5]]
    x = gd.tensor(x_host, requires_grad=True)
    y = F.max_pool2d(x, 2)
    assert y.shape == (2, 3, 3, 3) and y.dtype == np.dtype(dtype)
    y_want, index_want = reference(x_host, (2, 2), (2, 2), (0, 0), (1, 1))
    np.testing.assert_array_equal(to_numpy(y), y_want.transpose(3, 0, 1, 2))
    y.sum().backward()
    grad = to_numpy(x.grad)
    np.testing.assert_array_equal(grad[0, 0, 2:4, 2:4], [[0, 0], [1, 0]])
    np.testing.assert_array_equal(grad, reference_grad(np.ones(y_want.shape), index_want, x_host.shape, (2, 2),
                                                       (2, 2), (0, 0), (1, 1)).transpose(3, 0, 1, 2))


@pytest.mark.parametrize("kernel, stride, padding, dilation", CASES)
def test_values_and_gradcheck_on_the_device(device, kernel, stride, padding, dilation):
    """Distinct float64 values (no ties: the gradient is smooth around them) from a batch-last input,
    as after a convolution."""
    x_host = np.random.default_rng(4).permutation(2 * 3 * 7 * 6).reshape(3, 7, 6, 2) / 7.0
    x = gd.tensor(x_host, device=device, requires_grad=True).permute(3, 0, 1, 2)
    out = F.max_pool2d(x, kernel, stride, padding, dilation)
    want, _ = reference(x_host.transpose(3, 0, 1, 2), kernel, stride, padding, dilation)
    np.testing.assert_array_equal(to_numpy(out), want.transpose(3, 0, 1, 2))
    assert gradcheck(lambda t: F.max_pool2d(t.permute(3, 0, 1, 2), kernel, stride, padding, dilation),
                     gd.tensor(x_host, device=device, requires_grad=True))


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("kernel, stride, padding, dilation", CASES)
def test_matches_pytorch_with_ties_nan_and_inf(torch, kernel, stride, padding, dilation, ceil_mode):
    """Values, and the input gradient for whole-number output gradients, equal PyTorch's
    F.max_pool2d with ties, NaNs and -infs in the windows (the overlapping windows' sums are exact
    in either order)."""
    x = awkward_input((3, 2, 7, 6), "float64", seed=5)
    shape = (3, 2, *out_hw(x.shape, kernel, stride, padding, dilation, ceil_mode))
    weights = np.random.default_rng(6).integers(-4, 5, shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, kernel, stride, padding, dilation, ceil_mode)
    yt.backward(torch.tensor(weights, dtype=torch.float64))
    xg = gd.tensor(x, requires_grad=True)
    yg = F.max_pool2d(xg, kernel, stride, padding, dilation, ceil_mode)
    assert yg.shape == yt.shape
    np.testing.assert_array_equal(yg.numpy(), yt.detach().numpy())
    yg.backward(gd.tensor(weights.astype(np.float64)))
    np.testing.assert_array_equal(xg.grad.numpy(), xt.grad.numpy())
