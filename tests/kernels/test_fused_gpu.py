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
    """Equal within the dtype's tolerance; NaN only where both have it, and on at most 1% of
    the entries (the edge-case inputs), so that a comparison is never mostly of NaNs."""
    got = cupy.asnumpy(got)
    assert got.dtype == want.dtype
    assert np.isnan(want).mean() <= 0.01, f"{np.isnan(want).sum()} of {want.size} expected values are NaN"
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
    fc.check_class_indices(cupy.asarray([1, 2, 3]), 10, -100, "target")
    fc.raise_pending_device_errors()                 # the flag row was reset


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_same_mask(fc, dtype):
    x = np.random.default_rng(3).standard_normal((300, 70)).astype(dtype) + 3
    y = fc.dropout_forward(cupy.asarray(x), 0.4, 123, 9)
    want = fn.dropout_forward(x, 0.4, 123, 9)
    np.testing.assert_array_equal(cupy.asnumpy(y) == 0, want == 0)
    close(y, want, dtype)


def _state(rng, dtype, count):
    """A parameter and ``count - 1`` zero state buffers, on the host and (copies) on the device."""
    host = [rng.standard_normal(1000).astype(dtype)] + [np.zeros(1000, dtype) for _ in range(count - 1)]
    return host, [cupy.asarray(a) for a in host]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amsgrad,decoupled", [(False, False), (True, False), (False, True)])
def test_adam(fc, dtype, amsgrad, decoupled):
    """Three Adam/AdamW steps, each optimizer on its own parameter and state."""
    rng = np.random.default_rng(4)
    host, dev = _state(rng, dtype, 4)
    for step in (1, 2, 3):
        g = rng.standard_normal(1000).astype(dtype)
        kw = dict(step=step, lr=1e-2, weight_decay=0.01, amsgrad=amsgrad, decoupled=decoupled)
        fn.adam_update(host[0], g, host[1], host[2], host[3] if amsgrad else None, **kw)
        fc.adam_update(dev[0], cupy.asarray(g), dev[1], dev[2], dev[3] if amsgrad else None, **kw)
    for d, h in zip(dev, host):
        assert np.isfinite(h).all()
        close(d, h, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd(fc, dtype, momentum, nesterov):
    """Three SGD steps on a parameter and momentum buffer of their own."""
    rng = np.random.default_rng(5)
    host, dev = _state(rng, dtype, 2)
    for step in (1, 2, 3):
        g = rng.standard_normal(1000).astype(dtype)
        kw = dict(lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=1e-3,
                  first_step=step == 1)
        fn.sgd_update(host[0], g, host[1] if momentum else None, **kw)
        fc.sgd_update(dev[0], cupy.asarray(g), dev[1] if momentum else None, **kw)
    for d, h in zip(dev, host):
        assert np.isfinite(h).all()
        close(d, h, dtype)



@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
def test_recurrent_cells(fc, dtype, masked):
    """Every cell kernel, forward and backward, on the device against the NumPy twin.

    Each call gets the same inputs on both sides; ``outs`` are the arrays it writes (in/out ones
    start from the same values), compared afterwards."""
    rng = np.random.default_rng(5)
    batch, hidden, t = 33, 20, 2
    lengths = rng.integers(1, 5, batch).astype(np.int64) if masked else None
    dev_lengths = None if lengths is None else cupy.asarray(lengths)

    def r(width=1):
        return (rng.standard_normal((batch, width * hidden)) * 2).astype(dtype)

    def both(name, ins, outs, **kw):
        host = [o.copy() for o in outs]
        dev = [cupy.asarray(o) for o in outs]
        getattr(fn, name)(*ins, *host, lengths=lengths, t=t, **kw)
        getattr(fc, name)(*(cupy.asarray(a) for a in ins), *dev, lengths=dev_lengths, t=t, **kw)
        for d, h in zip(dev, host):
            close(d, h, dtype)
        return host

    for relu in (False, True):
        (h,) = both("rnn_cell_forward", [r(), r(), r()], [r()], relu=relu)
        both("rnn_cell_backward", [h, r(), r()], [r(), r()], relu=relu)

    gates, hw, c_prev, h_prev = r(4), r(4), r(), r()
    host_gates, dev_gates = gates.copy(), cupy.asarray(gates)
    outs = [np.empty((batch, hidden), dtype) for _ in range(3)]
    dev_outs = [cupy.asarray(o) for o in outs]
    fn.lstm_cell_forward(host_gates, hw, c_prev, h_prev, *outs, lengths=lengths, t=t)
    fc.lstm_cell_forward(dev_gates, cupy.asarray(hw), cupy.asarray(c_prev), cupy.asarray(h_prev),
                         *dev_outs, lengths=dev_lengths, t=t)
    for d, h in zip([dev_gates, *dev_outs], [host_gates, *outs]):
        close(d, h, dtype)
    tanh_c = outs[2]
    host_grads = [r(), r(), np.empty((batch, 4 * hidden), dtype)]
    dev_grads = [cupy.asarray(g) for g in host_grads]
    ins = [host_gates, c_prev, tanh_c, r(), r()]
    fn.lstm_cell_backward(*ins, *host_grads, lengths=lengths, t=t)
    fc.lstm_cell_backward(*(cupy.asarray(a) for a in ins), *dev_grads, lengths=dev_lengths, t=t)
    for d, h in zip(dev_grads, host_grads):
        close(d, h, dtype)

    bias = (rng.standard_normal(3 * hidden)).astype(dtype)
    act, _ = both("gru_cell_forward", [r(3), r(3), bias, h_prev],
                  [np.empty((batch, 4 * hidden), dtype), r()])
    both("gru_cell_backward", [act, h_prev, r(), r()],
         [r(), np.empty((batch, 3 * hidden), dtype), np.empty((batch, 3 * hidden), dtype)])
