"""Convolution's im2col and col2im kernels (kernels/conv.cuh, gpudl.backend.conv_kernels).

The NumPy twins against definitions (im2col against the windows of an explicitly padded input,
col2im as im2col's adjoint); the compiled host kernels against the twins, bit for bit, in
float16/32/64 for padding 0/1/2, stride 1/2, dilation 2, batch 1 and odd sizes, non-square inputs
and kernels, batch-last, NCHW and non-dense inputs, and every run length a launch may use (the
GPU's one element, whole rows, split rows); argument errors; F.conv2d with groups on every CPU
kernel path and on the device (the CuPy double in CI). Gradchecks of conv2d are in
tests/test_nn_layers.py.
"""
import functools

import numpy as np
import pytest

import gpudl as gd
from gpudl.backend import conv_kernels as twin
from gpudl.backend import fused_numpy, host_compiler
from gpudl.nn import functional as F

from tests.conftest import to_numpy

DTYPES = ["float16", "float32", "float64"]
_HAS_COMPILER = bool(host_compiler.shutil.which(host_compiler.compiler()))
needs_compiler = pytest.mark.skipif(not _HAS_COMPILER, reason=f"no C++ compiler {host_compiler.compiler()!r} on "
                                                              "PATH: the CPU kernels cannot be built")

# (N, C, H, W, kernel, stride, (top, bottom, left, right), dilation)
GEOMETRIES = [
    (3, 2, 5, 7, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (1, 3, 8, 6, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)),
    (5, 2, 9, 9, (3, 3), (2, 2), (2, 2, 2, 2), (2, 2)),
    (7, 1, 6, 11, (3, 2), (1, 2), (2, 1, 0, 1), (2, 1)),
    (64, 4, 6, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (2, 2, 4, 4, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),  # taps that read nothing but padding
]


def out_size(h, w, kernel, stride, pads, dilation):
    return tuple((size + a + b - d * (k - 1) - 1) // s + 1 for size, a, b, k, s, d in
                 ((h, pads[0], pads[1], kernel[0], stride[0], dilation[0]),
                  (w, pads[2], pads[3], kernel[1], stride[1], dilation[1])))


def make(geometry, dtype, layout="nchw", seed=0):
    """x [N, C, H, W] in ``layout`` (``nchw``, ``batch-last`` or ``strided``, a non-dense view),
    empty columns and a column gradient for ``geometry``."""
    n, c, h, w, kernel, stride, pads, dilation = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    if layout == "batch-last":
        x = np.ascontiguousarray(x.transpose(twin.TO_BATCH_LAST)).transpose(twin.TO_NCHW)
    elif layout == "strided":
        x = np.repeat(x, 2, axis=3)[..., ::2]
    oh, ow = out_size(h, w, kernel, stride, pads, dilation)
    shape = (c, *kernel, oh, ow, n)
    return x, np.full(shape, np.nan, dtype), rng.standard_normal(shape).astype(dtype)


def reference_columns(x, kernel, stride, pads, dilation):
    """The columns from the definition: windows of the zero-padded input, tap by tap."""
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]))
    oh, ow = out_size(h, w, kernel, stride, pads, dilation)
    cols = np.empty((c, *kernel, oh, ow, n), x.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            window = padded[:, :, i * dilation[0]::stride[0], j * dilation[1]::stride[1]][:, :, :oh, :ow]
            cols[:, i, j] = window.transpose(twin.TO_BATCH_LAST)
    return cols


@pytest.mark.parametrize("layout", ["nchw", "batch-last", "strided"])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_twin_im2col_matches_the_definition(geometry, layout):
    x, cols, _ = make(geometry, "float64", layout)
    _, _, _, _, kernel, stride, pads, dilation = geometry
    assert twin.im2col(x, cols, stride, pads, dilation) is cols
    np.testing.assert_array_equal(cols, reference_columns(x, kernel, stride, pads, dilation))


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_twin_col2im_is_the_adjoint_of_im2col(geometry):
    """<im2col(x), g> == <x, col2im(g)> for every x and g: col2im is im2col's transpose."""
    x, cols, gcols = make(geometry, "float64")
    _, _, _, _, _, stride, pads, dilation = geometry
    twin.im2col(x, cols, stride, pads, dilation)
    gx = twin.col2im(gcols, x.shape, stride, pads, dilation)
    assert gx.shape == x.transpose(twin.TO_BATCH_LAST).shape and gx.flags.c_contiguous
    np.testing.assert_allclose(np.vdot(cols, gcols), np.vdot(x.transpose(twin.TO_BATCH_LAST), gx), rtol=1e-12)


def test_twin_col2im_accumulates_float16_in_float32():
    """Taps summed in float32 and rounded once: 2048 + 1 + 1 is 2050, where float16 sums give 2048."""
    # a [1, 3] kernel over one row of 3, padded by 1 left and right: taps kj = 0, 1, 2 read input
    # w = 1 at outputs ow = 2, 1, 0
    gcols = np.zeros((1, 1, 3, 1, 3, 1), np.float16)
    gcols[0, 0, :, 0, :, 0] = [[0, 0, 2048], [0, 1, 0], [1, 0, 0]]
    gx = twin.col2im(gcols, (1, 1, 1, 3), (1, 1), (0, 0, 1, 1), (1, 1))
    assert gx.dtype == np.float16 and gx[0, 0, 1, 0] == 2050


def run_lengths():
    """Every run per index a launch may use: the GPU's, one batch, whole rows, the host's policy
    (split rows on several threads), and the policy as if every loop ran on several threads."""
    return {"gpu": lambda n, width, elements: 1, "batch": lambda n, width, elements: n,
            "row": lambda n, width, elements: n * width,
            "host": functools.partial(twin.host_run, parallel_min=8192),
            "split": functools.partial(twin.host_run, parallel_min=1)}


@needs_compiler
@pytest.mark.parametrize("run", list(run_lengths()))
@pytest.mark.parametrize("layout", ["nchw", "batch-last", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_native_matches_twin(geometry, dtype, layout, run):
    from gpudl.backend import native_kernels
    im2col, col2im = twin.bind(native_kernels.kernel, np, run_lengths()[run])
    x, cols, gcols = make(geometry, dtype, layout)
    _, _, _, _, _, stride, pads, dilation = geometry
    want = twin.im2col(x, cols.copy(), stride, pads, dilation)
    assert im2col(x, cols, stride, pads, dilation) is cols
    np.testing.assert_array_equal(cols, want)
    got, want = col2im(gcols, x.shape, stride, pads, dilation), twin.col2im(gcols, x.shape, stride, pads, dilation)
    assert got.dtype == want.dtype and got.shape == want.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


@needs_compiler
def test_host_run_policy():
    """Whole rows while a loop stays on one thread; rows split into runs of >= MIN_PARALLEL_RUN
    elements, with enough indices for every thread, when the loop is large enough."""
    assert twin.host_run(32, 14, 32 * 9 * 14 * 14 * 32, 8192) == 32 * 14   # conv2 im2col at batch 32
    assert twin.host_run(128, 14, 32 * 9 * 14 * 14 * 128, 8192) == 256     # and at batch 128: 28224 runs
    assert twin.host_run(7, 5, 7 * 5, 8192) == 35


def test_argument_errors():
    geometry = GEOMETRIES[0]
    x, cols, _ = make(geometry, "float32")
    args = ((1, 1), (1, 1, 1, 1), (1, 1))
    with pytest.raises(TypeError, match="im2col: expected float16/float32/float64 arrays of one dtype, got "
                                        "float32 and float64"):
        twin.im2col(x.astype(np.float64), cols, *args)
    with pytest.raises(TypeError, match="col2im: expected float16/float32/float64 arrays of one dtype, got int32"):
        twin.col2im(np.zeros(cols.shape, np.int32), x.shape, *args)
    with pytest.raises(ValueError, match=r"im2col: the columns must be a C-contiguous \[C, KH, KW, OH, OW, N\] "
                                         r"array with C=2 and N=3 \(input shape \(3, 2, 5, 7\)\), got shape "
                                         r"\(2, 3, 3, 5, 7, 2\)"):
        twin.im2col(x, cols[..., :2], *args)
    with pytest.raises(ValueError, match=r"col2im: columns of output size \(5, 7\) do not fit an input of shape "
                                         r"\(3, 2, 5, 7\) with kernel \(3, 3\), stride \(2, 1\), padding "
                                         r"\(1, 1, 1, 1\), dilation \(1, 1\) \(output size \(3, 7\)\)"):
        twin.col2im(cols, x.shape, (2, 1), (1, 1, 1, 1), (1, 1))


@pytest.mark.parametrize("path", ["numpy", "native"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_on_each_cpu_path(monkeypatch, path, dtype):
    """F.conv2d with groups 2, stride 2, padding and dilation, forward and backward, on the twins
    (GPUDL_CPU_KERNELS=numpy) and on the compiled kernels: the values of a float64 direct sum."""
    if path == "native" and not _HAS_COMPILER:
        pytest.skip("no C++ compiler: the CPU kernels cannot be built")
    from gpudl import backend
    from gpudl.backend import fused_native
    monkeypatch.setattr(backend.NUMPY, "fused", fused_native if path == "native" else fused_numpy)
    rng = np.random.default_rng(1)
    x_host = rng.standard_normal((3, 4, 7, 6)).astype(dtype)
    w_host = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
    b_host = rng.standard_normal(6).astype(dtype)
    x, w, b = (gd.tensor(a, requires_grad=True) for a in (x_host, w_host, b_host))
    y = F.conv2d(x, w, b, stride=2, padding=(1, 2), dilation=(2, 1), groups=2)
    gy = rng.standard_normal(y.shape).astype(dtype)
    (y * gd.tensor(gy)).sum().backward()
    # float64 reference from the columns of the definition and one product per group
    x64, w64, gy64 = (a.astype(np.float64) for a in (x_host, w_host, gy))
    cols = reference_columns(x64, (3, 2), (2, 2), (1, 1, 2, 2), (2, 1)).reshape(2, 2 * 3 * 2, -1)
    out = np.matmul(w64.reshape(2, 3, -1), cols).reshape(6, *y.shape[2:], 3).transpose(twin.TO_NCHW)
    out += b_host.astype(np.float64).reshape(1, 6, 1, 1)
    g3 = gy64.transpose(twin.TO_BATCH_LAST).reshape(2, 3, -1)
    gw = np.matmul(g3, cols.transpose(0, 2, 1)).reshape(w_host.shape)
    gcols = np.matmul(w64.reshape(2, 3, -1).transpose(0, 2, 1), g3).reshape(4, 3, 2, *y.shape[2:], 3)
    gx = twin.col2im(gcols, x_host.shape, (2, 2), (1, 1, 2, 2), (2, 1)).transpose(twin.TO_NCHW)
    tol = dict(rtol=1e-2, atol=2e-2) if dtype == "float16" else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(y).astype(np.float64), out, **tol)
    np.testing.assert_allclose(to_numpy(w.grad).astype(np.float64), gw, **tol)
    np.testing.assert_allclose(to_numpy(b.grad).astype(np.float64), gy64.sum(axis=(0, 2, 3)), **tol)
    np.testing.assert_allclose(to_numpy(x.grad).astype(np.float64), gx, **tol)


def test_conv2d_on_the_device(device):
    """The device's forward and backward give the NumPy backend's values, for an NCHW input (a
    first layer) and a batch-last one (tests/test_launches.py checks the launches themselves)."""
    rng = np.random.default_rng(2)
    x_host = rng.standard_normal((5, 4, 9, 8)).astype(np.float32)
    w_host = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    w2_host = rng.standard_normal((6, 2, 2, 2)).astype(np.float32)
    results = {}
    for where in ("cpu", device):
        x = gd.tensor(x_host, device=where, requires_grad=True)
        w = gd.tensor(w_host, device=where, requires_grad=True)
        y = F.conv2d(x, w, None, stride=(1, 2), padding=2, dilation=2, groups=2)
        z = F.conv2d(F.relu(y), gd.tensor(w2_host, device=where), None, padding=1, groups=3)  # a batch-last input
        z.sum().backward()
        results[where] = [to_numpy(a) for a in (y, z, x.grad, w.grad)]
    for got, want in zip(results[device], results["cpu"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride, padding, dilation, groups", [
    (1, 1, 1, 1), (2, 0, 1, 1), (1, 2, 2, 1), ((2, 1), (1, 2), (1, 2), 2), (1, "same", 1, 2)])
def test_conv2d_matches_pytorch(torch, stride, padding, dilation, groups):
    """F.conv2d against torch.nn.functional.conv2d in float64, forward and the input, weight and
    bias gradients, from an NCHW input (a first layer) and through a second, batch-last one."""
    rng = np.random.default_rng(3)
    x_host = rng.standard_normal((5, 4, 9, 8))
    w1_host, b1_host = rng.standard_normal((6, 4 // groups, 3, 3)), rng.standard_normal(6)
    w2_host = rng.standard_normal((4, 6 // groups, 2, 3))
    results = []
    for lib, functional in ((gd, F), (torch, torch.nn.functional)):
        x, w1, b1, w2 = (lib.tensor(a, requires_grad=True) for a in (x_host, w1_host, b1_host, w2_host))
        y = functional.conv2d(x, w1, b1, stride, padding, dilation, groups)
        z = functional.conv2d(functional.relu(y), w2, None, 1, 1, 1, groups)
        (z * lib.tensor(np.linspace(-1, 1, z.numel()).reshape(tuple(z.shape)))).sum().backward()
        results.append([a.detach().numpy() for a in (y, z, x.grad, w1.grad, b1.grad, w2.grad)])
    for got, want in zip(*results):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
