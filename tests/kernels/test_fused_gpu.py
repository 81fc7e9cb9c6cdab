"""Each fused op on CuPy against the NumPy backend (needs a CUDA GPU)."""
import numpy as np
import pytest

try:
    import cupy
    _GPU = bool(cupy.cuda.is_available())
except Exception:  # CuPy missing, or CuPy 13 raising on a bad driver
    _GPU = False

pytestmark = pytest.mark.skipif(
    not _GPU, reason="no CUDA GPU available (cupy.cuda.is_available() is False)")

from gpudl.backend import fused_numpy as fn  # noqa: E402
from gpudl.backend.kernel_specs import ACTIVATIONS  # noqa: E402

DTYPES = ["float16", "float32", "float64"]
TOL = {"float16": dict(rtol=3e-3, atol=2e-3), "float32": dict(rtol=2e-5, atol=2e-5),
       "float64": dict(rtol=1e-12, atol=1e-12)}


@pytest.fixture(scope="module")
def fc():
    from gpudl.backend import fused_cupy
    return fused_cupy


def close(got, want, dtype):
    got = cupy.asnumpy(got)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), equal_nan=True,
                               **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation(fc, name, dtype):
    x = np.concatenate([[0.0, -0.0, np.nan, np.inf, -np.inf, 30, -30],
                        np.random.default_rng(0).standard_normal(1000) * 4]).astype(dtype)
    gy = np.random.default_rng(1).standard_normal(x.size).astype(dtype)
    y = fn.activation_forward(name, x)
    close(fc.activation_forward(name, cupy.asarray(x)), y, dtype)
    close(fc.activation_backward(name, cupy.asarray(x), cupy.asarray(y), cupy.asarray(gy)),
          fn.activation_backward(name, x, y, gy), dtype)
    xs = x[:1000].reshape(40, 25)[:, ::2]  # strided view
    close(fc.activation_forward(name, cupy.asarray(x[:1000]).reshape(40, 25)[:, ::2]),
          fn.activation_forward(name, xs), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_softmax_cross_entropy(fc, dtype, eps):
    rng = np.random.default_rng(2)
    logits = (rng.standard_normal((512, 10)) * 3).astype(dtype)
    t = rng.integers(0, 10, 512)
    t[::7] = -100
    gl = rng.standard_normal(512).astype(dtype)
    loss, lse = fn.softmax_cross_entropy_forward(logits, t, -100, eps)
    loss_c, lse_c = fc.softmax_cross_entropy_forward(cupy.asarray(logits), cupy.asarray(t),
                                                     -100, eps)
    close(loss_c, loss, dtype)
    close(lse_c, lse, dtype)
    close(fc.softmax_cross_entropy_backward(cupy.asarray(logits), lse_c, cupy.asarray(t),
                                            cupy.asarray(gl), -100, eps),
          fn.softmax_cross_entropy_backward(logits, lse, t, gl, -100, eps), dtype)
    fc.raise_pending_device_errors()


def test_class_index_errors_are_deferred(fc):
    t = cupy.asarray([1, 2, 11])
    fc.check_class_indices(t, 10, -100, "target")   # no sync, no raise yet
    with pytest.raises(IndexError, match=r"target 11 is out of bounds"):
        fc.raise_pending_device_errors()
    fc.raise_pending_device_errors()                 # cleared


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_same_mask(fc, dtype):
    x = np.random.default_rng(3).standard_normal((300, 70)).astype(dtype) + 3
    y = fc.dropout_forward(cupy.asarray(x), 0.4, 123, 9)
    want = fn.dropout_forward(x, 0.4, 123, 9)
    np.testing.assert_array_equal(cupy.asnumpy(y) == 0, want == 0)
    close(y, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_and_sgd(fc, dtype, amsgrad):
    rng = np.random.default_rng(4)
    p = rng.standard_normal(1000).astype(dtype)
    states = [np.zeros_like(p) for _ in range(3)]
    dev = [cupy.asarray(a) for a in [p, *states]]
    host = [p.copy(), *states]
    for step in (1, 2, 3):
        g = rng.standard_normal(1000).astype(dtype)
        fn.adam_update(host[0], g, host[1], host[2], host[3] if amsgrad else None, step=step,
                       lr=1e-2, weight_decay=0.01, amsgrad=amsgrad, decoupled=True)
        fc.adam_update(dev[0], cupy.asarray(g), dev[1], dev[2], dev[3] if amsgrad else None,
                       step=step, lr=1e-2, weight_decay=0.01, amsgrad=amsgrad, decoupled=True)
        fn.sgd_update(host[1], g, host[2], lr=0.1, momentum=0.9, nesterov=True,
                      first_step=step == 1)
        fc.sgd_update(dev[1], cupy.asarray(g), dev[2], lr=0.1, momentum=0.9, nesterov=True,
                      first_step=step == 1)
    for d, h in zip(dev, host):
        close(d, h, dtype)
