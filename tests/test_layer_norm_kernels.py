"""Layer norm's fused row kernels (kernels/layer_norm.cuh, gpudl.backend.layer_norm_kernels).

The NumPy twin against a float64 definition (PyTorch's: biased variance, eps inside the square
root); the compiled host kernels against the twin in float16/32/64 for rows of 1, odd and 64
values, affine on and off, and past the OpenMP threshold; the variance of rows far from zero (two
passes); argument errors; ``F.layer_norm`` on every CPU kernel path and on the device (the CuPy
double in CI), launching one kernel each way.
"""
import numpy as np
import pytest

import gpudl as gd
from gpudl.backend import fused_numpy, host_compiler, layer_norm_kernels as twin
from gpudl import nn
from gpudl.nn import functional as F

from tests.conftest import to_numpy

DTYPES = ["float16", "float32", "float64"]
# float16 results round once from float32 arithmetic; the kernels sum rows in 16 lanes, NumPy pairwise
TOL = {"float16": dict(rtol=2e-3, atol=2e-3), "float32": dict(rtol=2e-5, atol=2e-5),
       "float64": dict(rtol=1e-12, atol=1e-12)}
AFFINE = ["weight and bias", "weight only", "none"]
_HAS_COMPILER = bool(host_compiler.shutil.which(host_compiler.compiler()))


def inputs(rows, cols, dtype, affine, seed=0):
    """x and gy [rows, cols], weight and bias [cols] (None where ``affine`` leaves them out)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, cols)) * 3 + 1).astype(dtype)
    gy = rng.standard_normal((rows, cols)).astype(dtype)
    weight = rng.standard_normal(cols).astype(dtype) if affine != "none" else None
    bias = rng.standard_normal(cols).astype(dtype) if affine == "weight and bias" else None
    return x, gy, weight, bias


def reference(x, gy, weight, bias, eps):
    """Forward and backward in float64 from the definition: ``(y, mean, rstd, gx, gweight, gbias)``."""
    x, gy = x.astype(np.float64), gy.astype(np.float64)
    w = np.ones(x.shape[1]) if weight is None else weight.astype(np.float64)
    mean = x.mean(axis=1)
    rstd = 1 / np.sqrt(x.var(axis=1) + eps)
    xhat = (x - mean[:, None]) * rstd[:, None]
    y = xhat * w + (0 if bias is None else bias.astype(np.float64))
    g = gy * w
    gx = rstd[:, None] * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))
    return y, mean, rstd, gx, (gy * xhat).sum(axis=0), gy.sum(axis=0)


def run(module, x, gy, weight, bias, eps=1e-5):
    """``(y, mean, rstd, gx, gweight, gbias)`` of ``module``'s layer_norm_forward/backward."""
    y, mean, rstd = module.layer_norm_forward(x, weight, bias, eps)
    gx, gw, gb = module.layer_norm_backward(x, gy, weight, mean, rstd, weight_grad=weight is not None,
                                            bias_grad=bias is not None)
    return y, mean, rstd, gx, gw, gb


def assert_all_close(got, want, dtype, what, rows=1):
    """Row results within the dtype's tolerance; the parameter gradients, sums over ``rows`` rows of
    terms of size ~1 added in another order, within sqrt(rows) times the absolute tolerance."""
    for name, g, w in zip(("y", "mean", "rstd", "gx", "gweight", "gbias"), got, want):
        assert (g is None) == (w is None), f"{what}: {name}"
        if g is None:
            continue
        assert g.shape == w.shape, f"{what}: {name} {g.shape} != {w.shape}"
        tol = dict(TOL[dtype])
        if name in ("gweight", "gbias"):
            tol["atol"] *= max(1.0, rows) ** 0.5
        np.testing.assert_allclose(g.astype(np.float64), np.asarray(w, np.float64), err_msg=f"{what}: {name}", **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("cols", [1, 7, 64, 100])
def test_twin_matches_the_definition(dtype, affine, cols):
    x, gy, weight, bias = inputs(5, cols, dtype, affine)
    got = run(twin, x, gy, weight, bias, eps=1e-3)
    want = list(reference(x, gy, weight, bias, 1e-3))
    want[4:] = [w if p is not None else None for w, p in zip(want[4:], (weight, bias))]
    acc = np.float32 if dtype == "float16" else np.dtype(dtype)
    assert [a.dtype for a in got if a is not None] == [np.dtype(dtype), acc, acc, dtype] + [dtype] * (
        (weight is not None) + (bias is not None))
    assert_all_close(got, want, dtype, f"twin {dtype} {affine} {cols}")


@pytest.mark.skipif(not _HAS_COMPILER, reason=f"no C++ compiler {host_compiler.compiler()!r} on PATH: the CPU "
                                               "kernels cannot be built")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("rows, cols", [(0, 64), (1, 1), (3, 7), (33, 64), (5, 100), (9000, 16)])
def test_native_matches_twin(dtype, affine, rows, cols):
    """9000 rows run on the OpenMP threads (past native_kernels.PARALLEL_MIN)."""
    from gpudl.backend import fused_native
    x, gy, weight, bias = inputs(rows, cols, dtype, affine)
    assert_all_close(run(fused_native, x, gy, weight, bias), run(twin, x, gy, weight, bias), dtype,
                     f"native {dtype} {affine} [{rows}, {cols}]", rows)


@pytest.mark.skipif(not _HAS_COMPILER, reason=f"no C++ compiler {host_compiler.compiler()!r} on PATH: the CPU "
                                               "kernels cannot be built")
@pytest.mark.parametrize("rows_per_block", [1, 5, 64, 200])
def test_backward_blocks_of_any_size(rows_per_block):
    """The backward's partial column sums per block of rows, as the GPU (1) and the host (64) launch
    them and with blocks that do not divide the rows or exceed them."""
    from gpudl.backend import native_kernels
    forward, backward = twin.bind(native_kernels.kernel, np, lambda rows, cols: rows_per_block)
    x, gy, weight, bias = inputs(131, 24, "float64", "weight and bias", seed=2)
    y, mean, rstd = forward(x, weight, bias)
    got = (y, mean, rstd, *backward(x, gy, weight, mean, rstd))
    assert_all_close(got, run(twin, x, gy, weight, bias), "float64", f"blocks of {rows_per_block}", 131)
    gx, gw, gb = backward(x, gy, None, mean, rstd, weight_grad=False, bias_grad=True)
    assert gw is None
    np.testing.assert_allclose(gb, gy.sum(axis=0), rtol=1e-12)


def test_gpu_blocks_keep_the_partial_sums_bounded():
    assert twin.gpu_rows_per_block(8192, 64) == 1  # the bench's batch 512: a thread per row
    for rows, cols in ((1, 1), (65536, 1024), (10**7, 768), (3, 2**23)):
        per_block = twin.gpu_rows_per_block(rows, cols)
        blocks = -(-rows // per_block)
        assert per_block >= 1 and blocks * cols <= twin.GPU_PARTIALS_MAX + cols, (rows, cols)  # one block over at most


@pytest.mark.parametrize("module", ["twin", "native"])
def test_variance_of_rows_far_from_zero(module):
    """Rows of float32 values around 1e4 with a spread of 1e-1: the mean is taken out before
    squaring, so var (1e-2) keeps its digits; sum(x^2)/D - mean^2 would lose all of them."""
    if module == "native" and not _HAS_COMPILER:
        pytest.skip("no C++ compiler: the CPU kernels cannot be built")
    from gpudl.backend import fused_native
    rng = np.random.default_rng(3)
    x = (1e4 + rng.standard_normal((16, 64)) * 0.1).astype(np.float32)
    _, mean, rstd = (twin if module == "twin" else fused_native).layer_norm_forward(x, eps=0.0)
    exact = x.astype(np.float64)
    np.testing.assert_allclose(mean, exact.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(rstd, 1 / exact.std(axis=1), rtol=1e-3)


def test_argument_errors():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(TypeError, match="layer_norm: expected a float16/float32/float64 input, got int32"):
        twin.layer_norm_forward(x.astype(np.int32))
    with pytest.raises(ValueError, match=r"C-contiguous \[rows, features\] array, got shape \(3, 4\)"):
        twin.layer_norm_forward(x.T)
    with pytest.raises(ValueError, match=r"weight of shape \(4,\) and dtype float32 does not match the input "
                                         r"\(4, 3\) float32 \(expected shape \(3,\)"):
        twin.layer_norm_forward(x, np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"bias of shape \(3,\) and dtype float64"):
        twin.layer_norm_forward(x, None, np.ones(3))
    _, mean, rstd = twin.layer_norm_forward(x)
    with pytest.raises(ValueError, match=r"gradient of shape \(4, 2\)"):
        twin.layer_norm_backward(x, x[:, :2], None, mean, rstd)


def test_functional_errors_name_the_op_and_shapes():
    x = gd.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"layer_norm: input of shape \(2, 3, 4\) does not end in normalized_shape "
                                         r"\(3,\)"):
        F.layer_norm(x, 3)
    with pytest.raises(ValueError, match=r"layer_norm: weight must have shape \(3, 4\), got \(4,\)"):
        F.layer_norm(x, (3, 4), gd.ones(4))
    with pytest.raises(TypeError, match="layer_norm: input has dtype float32 but bias has dtype float64"):
        F.layer_norm(x, 4, None, gd.zeros(4, dtype="float64"))


@pytest.mark.parametrize("path", ["numpy", "native"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_on_each_cpu_path(monkeypatch, path, dtype):
    """F.layer_norm forward and backward on the twins (GPUDL_CPU_KERNELS=numpy) and on the compiled
    kernels: the float64 definition's values and gradients for input, weight and bias; a
    non-contiguous input and a broadcast output gradient are made contiguous for the kernels."""
    if path == "native" and not _HAS_COMPILER:
        pytest.skip("no C++ compiler: the CPU kernels cannot be built")
    from gpudl import backend
    from gpudl.backend import fused_native
    monkeypatch.setattr(backend.NUMPY, "fused", fused_native if path == "native" else fused_numpy)
    x_host, _, w_host, b_host = inputs(6, 8, dtype, "weight and bias", seed=4)
    x = gd.tensor(np.ascontiguousarray(x_host.reshape(3, 2, 8).transpose(1, 0, 2)), requires_grad=True)
    w, b = gd.tensor(w_host, requires_grad=True), gd.tensor(b_host, requires_grad=True)
    view = x.permute(1, 0, 2)  # [3, 2, 8], non-contiguous
    y = F.layer_norm(view, (8,), w, b)
    assert y.dtype == np.dtype(dtype) and y.shape == (3, 2, 8)
    y.sum().backward()  # the output gradient: ones broadcast from a scalar
    y_want, _, _, gx_want, gw_want, gb_want = reference(x_host, np.ones_like(x_host), w_host, b_host, 1e-5)
    tol = TOL[dtype]
    np.testing.assert_allclose(to_numpy(y).reshape(6, 8).astype(np.float64), y_want, **tol)
    # float16: gx is a difference of terms of size |w| ~ 1, each rounded to float16 on the way
    gx_tol = dict(rtol=tol["rtol"], atol=1e-2) if dtype == "float16" else tol
    np.testing.assert_allclose(to_numpy(x.grad).transpose(1, 0, 2).reshape(6, 8).astype(np.float64), gx_want,
                               **gx_tol)
    np.testing.assert_allclose(to_numpy(w.grad).astype(np.float64), gw_want, **tol)
    np.testing.assert_allclose(to_numpy(b.grad).astype(np.float64), gb_want, **tol)


def test_layer_norm_on_the_device(device):
    """The device's forward and backward give the NumPy backend's values (tests/test_launches.py
    checks the launches themselves)."""
    x_host, gy_host, w_host, b_host = inputs(12, 64, "float32", "weight and bias", seed=5)
    results = {}
    for where in ("cpu", device):
        x = gd.tensor(x_host, device=where, requires_grad=True)
        w = gd.tensor(w_host, device=where, requires_grad=True)
        b = gd.tensor(b_host, device=where, requires_grad=True)
        y = F.layer_norm(x.reshape(3, 4, 64), 64, w, b)
        (y * gd.tensor(gy_host.reshape(3, 4, 64), device=where)).sum().backward()
        results[where] = [to_numpy(a) for a in (y, x.grad, w.grad, b.grad)]
    for got, want in zip(results[device], results["cpu"]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_twin_is_the_numpy_fallback():
    assert fused_numpy.layer_norm_forward is twin.layer_norm_forward
    assert fused_numpy.layer_norm_backward is twin.layer_norm_backward


@pytest.mark.parametrize("normalized_shape, affine", [((64,), "weight and bias"), ((4, 6), "weight only"),
                                                      ((5,), "none")])
def test_matches_pytorch(torch, device, normalized_shape, affine):
    """nn.LayerNorm against torch.nn.LayerNorm (elementwise_affine, bias) in float32: the output and
    the gradients of input, weight and bias."""
    rng = np.random.default_rng(6)
    shape = (3, 5) + normalized_shape
    x_host = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    gy_host = rng.standard_normal(shape).astype(np.float32)
    options = dict(elementwise_affine=affine != "none", bias=affine == "weight and bias")
    ours, theirs = nn.LayerNorm(normalized_shape, eps=1e-4, device=device, **options), torch.nn.LayerNorm(
        normalized_shape, eps=1e-4, **options)
    for name in ("weight", "bias"):
        if getattr(theirs, name) is not None:
            values = rng.standard_normal(normalized_shape).astype(np.float32)
            getattr(theirs, name).data = torch.from_numpy(values)
            getattr(ours, name).data = gd.tensor(values, device=device).data
    x, x_t = gd.tensor(x_host, device=device, requires_grad=True), torch.tensor(x_host, requires_grad=True)
    y, y_t = ours(x), theirs(x_t)
    (y * gd.tensor(gy_host, device=device)).sum().backward()
    (y_t * torch.from_numpy(gy_host)).sum().backward()
    np.testing.assert_allclose(to_numpy(y), y_t.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(x.grad), x_t.grad.numpy(), rtol=1e-4, atol=1e-4)
    for name in ("weight", "bias"):
        param, param_t = getattr(ours, name), getattr(theirs, name)
        assert (param is None) == (param_t is None)
        if param is not None:
            np.testing.assert_allclose(to_numpy(param.grad), param_t.grad.numpy(), rtol=1e-4, atol=1e-4)
