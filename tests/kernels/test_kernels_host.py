"""The kernels' own C++ (headers and operation strings), run on the host by g++, against fused_numpy.

Covers every kernel in kernel_specs.KERNELS for float16/32/64 on random and edge-case inputs;
dropout masks must be identical; SGD/Adam steps are also checked against a float64 reference
written from PyTorch's documented update rules.
"""
import math
import shutil

import numpy as np
import pytest

from gpudl.backend import fused_numpy as fn
from gpudl.backend.kernel_specs import (ACC_DTYPE, ACTIVATION_BACKWARD_USES, ACTIVATIONS, KERNELS,
                                        SIGNATURES)

import host_math as hm

pytestmark = pytest.mark.skipif(shutil.which(hm.CXX) is None, reason=f"no {hm.CXX} on PATH")
DTYPES = ["float16", "float32", "float64"]
# Device exp/erf/tanh (and glibc vs NumPy's SIMD loops) differ by a few ulp; float16 rounds once.
TOL = {"float16": dict(rtol=2e-3, atol=1e-3), "float32": dict(rtol=1e-5, atol=1e-5),
       "float64": dict(rtol=1e-13, atol=1e-13)}
PARAMS = {"leaky_relu": {"negative_slope": 0.2}, "elu": {"alpha": 1.5},
          "softplus": {"beta": 2.0, "threshold": 10.0}}


def dtype_ok(dtype):
    if dtype == "float16" and not hm.have_float16():
        pytest.skip("host compiler has no _Float16")


def edge_values(dtype):
    edges = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 3.0, -3.0, 10.0, -10.0, 30.0, -30.0, 100.0, -100.0,
             np.inf, -np.inf, np.nan, 1e-3, -1e-3]
    rng = np.random.default_rng(0)
    x = np.concatenate([edges, rng.standard_normal(2000) * 4, rng.uniform(-50, 50, 500)])
    return x.astype(dtype)


def assert_same(got, want, dtype, what=""):
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN positions")
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), err_msg=what,
                               equal_nan=True, **TOL[dtype])


def scalar(v, dt="float64"):
    return ("scalar", dt), v


# --- host twins of the backend functions, built from the kernel specs ---------------------

def host_activation_forward(name, x, preamble=None, **params):
    spec = KERNELS[f"{name}_forward"]
    params = fn.resolve_activation_params(name, params)
    y = np.empty_like(x)
    dt = x.dtype.name
    hm.run_elementwise(spec, [x, *params.values(), y],
                       [dt, *(("scalar", "float64"),) * len(params), dt], x.size, preamble)
    return y


def host_activation_backward(name, x, y, gy, preamble=None, **params):
    spec = KERNELS[f"{name}_backward"]
    params = fn.resolve_activation_params(name, params)
    saved = y if ACTIVATION_BACKWARD_USES[name] == "y" else x
    gx = np.empty_like(gy)
    dt = gy.dtype.name
    hm.run_elementwise(spec, [saved, gy, *params.values(), gx],
                       [dt, dt, *(("scalar", "float64"),) * len(params), dt], gy.size, preamble)
    return gx


def host_softmax_cross_entropy_forward(logits, targets, ignore_index, label_smoothing):
    n, c = logits.shape
    dt, acc, tdt = logits.dtype.name, ACC_DTYPE[logits.dtype.name], targets.dtype.name
    row_max = logits.max(axis=1)
    sum_exp = np.empty(n, acc)
    hm.run_reduction(KERNELS["softmax_cross_entropy_sum_exp"],
                     [logits, np.ascontiguousarray(np.broadcast_to(row_max[:, None], (n, c))),
                      sum_exp], [dt, dt, acc], n, c)
    loss, lse = np.empty(n, dt), np.empty(n, acc)
    i64, f64 = ("scalar", "int64"), ("scalar", "float64")
    hm.run_elementwise(KERNELS["softmax_cross_entropy_loss"],
                       [logits, targets, row_max, sum_exp, c, ignore_index, label_smoothing,
                        loss, lse], [dt, tdt, dt, acc, i64, i64, f64, dt, acc], n)
    return loss, lse


def host_softmax_cross_entropy_backward(logits, lse, targets, gloss, ignore_index, eps):
    n, c = logits.shape
    dt, acc, tdt = logits.dtype.name, ACC_DTYPE[logits.dtype.name], targets.dtype.name
    full = lambda a: np.ascontiguousarray(np.broadcast_to(a[:, None], (n, c)))  # noqa: E731
    gx = np.empty_like(logits)
    i64, f64 = ("scalar", "int64"), ("scalar", "float64")
    hm.run_elementwise(KERNELS["softmax_cross_entropy_backward"],
                       [logits, full(targets), full(lse), full(gloss), c, ignore_index, eps, gx],
                       [dt, tdt, acc, dt, i64, i64, f64, dt], n * c)
    return gx


# --- activations --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_numpy(name, dtype):
    dtype_ok(dtype)
    x = edge_values(dtype)
    params = PARAMS.get(name, {})
    y_host = host_activation_forward(name, x, **params)
    y_np = fn.activation_forward(name, x, **params)
    assert_same(y_host, y_np, dtype, f"{name} forward")
    gy = np.random.default_rng(1).standard_normal(x.size).astype(dtype)
    gx_host = host_activation_backward(name, x, y_np, gy, **params)
    gx_np = fn.activation_backward(name, x, y_np, gy, **params)
    assert_same(gx_host, gx_np, dtype, f"{name} backward")


def test_activation_edge_conventions():
    x = np.array([0.0, -0.0, np.nan, 1.0, -1.0], np.float32)
    assert np.isnan(host_activation_forward("relu", x)[2])
    assert not np.signbit(host_activation_forward("relu", x)[1])  # relu(-0.0) = +0.0, as np.maximum
    gy = np.ones_like(x)
    assert host_activation_backward("relu", x, fn.activation_forward("relu", x), gy)[0] == 0
    assert host_activation_backward("leaky_relu", x, None, gy, negative_slope=0.1)[0] == \
        np.float32(0.1)
    assert host_activation_backward("elu", x, None, gy, alpha=2.0)[0] == 2.0


def test_flipped_sign_in_header_is_caught():
    """The check is not vacuous: a sign error in one header function makes it fail."""
    spec = KERNELS["silu_forward"]
    broken = spec["preamble"].replace("return T(xa / (A(1) + exp(-xa)));",
                                      "return T(xa / (A(1) + exp(xa)));")
    assert broken != spec["preamble"]
    x = edge_values("float32")
    y_broken = host_activation_forward("silu", x, preamble=broken)
    with pytest.raises(AssertionError):
        assert_same(y_broken, fn.activation_forward("silu", x), "float32", "silu")


# --- softmax cross-entropy ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tdtype", ["int32", "int64", "uint8"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_softmax_cross_entropy_matches_numpy(dtype, tdtype, eps):
    dtype_ok(dtype)
    rng = np.random.default_rng(2)
    n, c = 64, 10
    logits = (rng.standard_normal((n, c)) * 3).astype(dtype)
    logits[0, 3] = 1e4 if dtype != "float16" else 6e4
    logits[1, :] = -1e4 if dtype != "float16" else -6e4
    logits[2, 5] = -np.inf
    ignore = 255 if tdtype == "uint8" else -100
    targets = rng.integers(0, c, n).astype(tdtype)
    targets[[4, 9]] = ignore
    loss_h, lse_h = host_softmax_cross_entropy_forward(logits, targets, ignore, eps)
    loss_n, lse_n = fn.softmax_cross_entropy_forward(logits, targets, ignore, eps)
    assert loss_n[4] == 0 and loss_h[4] == 0
    assert_same(lse_h, lse_n, dtype, "lse")
    assert_same(loss_h, loss_n, dtype, "loss")
    gloss = rng.standard_normal(n).astype(dtype)
    g_h = host_softmax_cross_entropy_backward(logits, lse_n, targets, gloss, ignore, eps)
    g_n = fn.softmax_cross_entropy_backward(logits, lse_n, targets, gloss, ignore, eps)
    assert (g_n[4] == 0).all() and (g_h[4] == 0).all()
    assert_same(g_h, g_n, dtype, "grad")


def test_softmax_cross_entropy_matches_float64_reference():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((16, 7))
    t = rng.integers(0, 7, 16)
    eps = 0.2
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    want = -(1 - eps) * logp[np.arange(16), t] - eps * logp.mean(1)
    loss, lse = fn.softmax_cross_entropy_forward(logits, t, -100, eps)
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    onehot = np.eye(7)[t] * (1 - eps) + eps / 7
    np.testing.assert_allclose(fn.softmax_cross_entropy_backward(logits, lse, t, np.ones(16),
                                                                 -100, eps),
                               np.exp(logp) - onehot, rtol=1e-12, atol=1e-15)


def test_class_index_check_kernel():
    spec = KERNELS["check_class_indices"]
    t = np.array([0, 3, 9, -100, 2], np.int64)
    for bad, want in ((None, 0), (12, 1), (-5, 1)):
        tt = t.copy()
        if bad is not None:
            tt[2] = bad
        error = np.zeros(2, np.int64)
        i64 = ("scalar", "int64")
        hm.run_elementwise(spec, [tt, 10, -100, error], ["int64", i64, i64, "int64"], tt.size)
        assert error[0] == want and (not want or error[1] == bad)
    with pytest.raises(IndexError, match=r"target 12 is out of bounds: valid range is \[0, 10\)"):
        fn.check_class_indices(np.array([1, 12]), 10, -100, "target")
    with pytest.raises(ValueError, match="integer"):
        fn.check_class_indices(np.array([1.0]), 10, -100, "target")


# --- dropout -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_dropout_mask_identical(dtype, p):
    dtype_ok(dtype)
    x = (np.random.default_rng(4).standard_normal((37, 29)) + 2).astype(dtype)
    seed, step = 2**63 + 12345, 7
    y = np.empty_like(x)
    u64, f64 = ("scalar", "uint64"), ("scalar", "float64")
    hm.run_elementwise(KERNELS["dropout"], [x, seed, step, p, y], [dtype, u64, u64, f64, dtype],
                       x.size)
    y_np = fn.dropout_forward(x, p, seed, step)
    np.testing.assert_array_equal(y == 0, y_np == 0)
    assert_same(y, y_np, dtype, "dropout")
    np.testing.assert_array_equal(fn.dropout_backward(x, p, seed, step), y_np)
    if 0 < p < 1:
        assert abs((y_np == 0).mean() - p) < 0.05
        assert not np.array_equal(fn.dropout_forward(x, p, seed, step + 1) == 0, y_np == 0)


def test_dropout_hash_definition():
    """Pin the documented hash: splitmix64(splitmix64(splitmix64(seed) ^ step) ^ i)."""
    assert fn.splitmix64_int(0) == 0xE220A8397B1DCDAF  # splitmix64 reference value for state 0
    seed, step, p = 5, 3, 0.5
    key = fn.splitmix64_int(fn.splitmix64_int(seed) ^ step)
    keep = [(fn.splitmix64_int(key ^ i) >> 11) * 2.0 ** -53 >= p for i in range(64)]
    np.testing.assert_array_equal(fn.dropout_keep_mask((64,), p, seed, step), keep)


# --- optimizers ----------------------------------------------------------------------------

def reference_sgd(p, g, buf, lr, momentum, dampening, nesterov, wd, first):
    g = g + wd * p if wd else g
    if momentum:
        buf = g.copy() if first else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, buf


def reference_adam(p, g, m, v, vmax, t, lr, b1, b2, eps, wd, amsgrad, decoupled):
    if wd:
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
    if amsgrad:
        vmax = np.maximum(vmax, v)
    denom = np.sqrt(vmax if amsgrad else v) / math.sqrt(bc2) + eps
    return p - (lr / bc1) * m / denom, m, v, vmax


SGD_CASES = [dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0),
             dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.01),
             dict(momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0),
             dict(momentum=0.9, dampening=0.1, nesterov=False, weight_decay=1e-3),
             dict(momentum=0.9, dampening=0.0, nesterov=True, weight_decay=1e-3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(SGD_CASES)))
def test_sgd_steps(dtype, case):
    dtype_ok(dtype)
    kw = SGD_CASES[case]
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(500).astype(dtype)
    p_np, p_h, p_ref = p0.copy(), p0.copy(), p0.astype(np.float64)
    b_np, b_h, b_ref = (np.zeros_like(p0), np.zeros_like(p0), np.zeros(500))
    f64, b = ("scalar", "float64"), ("scalar", "bool")
    for k in range(3):
        g = rng.standard_normal(500).astype(dtype)
        first = k == 0
        fn.sgd_update(p_np, g, b_np if kw["momentum"] else None, lr=0.1, first_step=first, **kw)
        if kw["momentum"]:
            hm.run_elementwise(KERNELS["sgd_momentum"],
                               [g, 0.1, kw["momentum"], kw["dampening"], kw["weight_decay"],
                                kw["nesterov"], first, p_h, b_h],
                               [dtype, f64, f64, f64, f64, b, b, dtype, dtype], g.size)
        else:
            hm.run_elementwise(KERNELS["sgd"], [g, 0.1, kw["weight_decay"], p_h],
                               [dtype, f64, f64, dtype], g.size)
        p_ref, b_ref = reference_sgd(p_ref, g.astype(np.float64), b_ref, 0.1, kw["momentum"],
                                     kw["dampening"], kw["nesterov"], kw["weight_decay"], first)
    np.testing.assert_array_equal(p_h, p_np)  # identical rounding: same op order, no FMA
    np.testing.assert_array_equal(b_h, b_np)
    np.testing.assert_allclose(p_np.astype(np.float64), p_ref, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("decoupled,wd", [(False, 0.0), (False, 0.01), (True, 0.01)])
def test_adam_steps(dtype, amsgrad, decoupled, wd):
    dtype_ok(dtype)
    rng = np.random.default_rng(6)
    p0 = rng.standard_normal(500).astype(dtype)
    state = lambda: [p0.copy(), np.zeros_like(p0), np.zeros_like(p0), np.zeros_like(p0)]  # noqa
    s_np, s_h = state(), state()
    ref = [p0.astype(np.float64), np.zeros(500), np.zeros(500), np.zeros(500)]
    hp = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=wd)
    f64, b = ("scalar", "float64"), ("scalar", "bool")
    from gpudl.backend.kernel_specs import adam_bias_corrections
    for t in range(1, 4):
        g = rng.standard_normal(500).astype(dtype)
        fn.adam_update(s_np[0], g, s_np[1], s_np[2], s_np[3] if amsgrad else None, step=t,
                       amsgrad=amsgrad, decoupled=decoupled, **hp)
        step_size, bc2 = adam_bias_corrections(t, hp["lr"], hp["beta1"], hp["beta2"])
        scalars = [hp["lr"], hp["beta1"], hp["beta2"], hp["eps"], wd, decoupled, step_size, bc2]
        outs = s_h if amsgrad else s_h[:3]
        hm.run_elementwise(KERNELS["adam_amsgrad" if amsgrad else "adam"], [g, *scalars, *outs],
                           [dtype, f64, f64, f64, f64, f64, b, f64, f64] + [dtype] * len(outs),
                           g.size)
        p, m, v, vmax = reference_adam(ref[0], g.astype(np.float64), *ref[1:], t, hp["lr"], hp["beta1"],
                                       hp["beta2"], hp["eps"], wd, amsgrad, decoupled)
        ref = [p, m, v, vmax]
    for got_h, got_np in zip(s_h, s_np):
        np.testing.assert_array_equal(got_h, got_np)
    tol = {"float16": dict(rtol=5e-3, atol=5e-3), "float32": dict(rtol=1e-5, atol=1e-5),
           "float64": dict(rtol=1e-12, atol=1e-14)}[dtype]
    np.testing.assert_allclose(s_np[0].astype(np.float64), ref[0], **tol)


# --- recurrent cells ----------------------------------------------------------------------------

CELL_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
NO_LENGTHS = np.full(6, 2**62, np.int64)  # every row valid (the CuPy backend's stand-in for None)


def cell_case(kind, dtype, seed=0, batch=6, hidden=5):
    """Random cell inputs, a few gates saturating, and lengths that end rows 1 and 4 before t=2."""
    rng = np.random.default_rng(seed)

    def r(*shape, scale=2.0):
        a = rng.standard_normal(shape) * scale
        a.reshape(-1)[::17] *= 15  # push some gates into saturation (|x| ~ 30)
        return a.astype(dtype)

    g = CELL_GATES[kind] * hidden
    return dict(xw=r(batch, g), hw=r(batch, g), bias=r(g, scale=0.5),
                h_prev=r(batch, hidden, scale=0.8), c_prev=r(batch, hidden),
                dy=r(batch, hidden, scale=1.0), dh_rec=r(batch, hidden, scale=1.0),
                dh=r(batch, hidden, scale=1.0), dc=r(batch, hidden, scale=1.0),
                lengths=np.array([3, 2, 5, 4, 1, 7], np.int64)[:batch], hidden=hidden, t=2)


def host_cell(name, ins, outs, dtype, size):
    """Run recurrent kernel ``name`` on the host over ``size`` state elements."""
    sig = next(s for s in SIGNATURES[name] if dtype in s.dtypes)
    hm.run_elementwise(KERNELS[name], ins + outs, sig.dtypes, size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_rnn_cell_matches_numpy(dtype, relu, masked):
    dtype_ok(dtype)
    c = cell_case("rnn", dtype)
    lengths = c["lengths"] if masked else None
    host_lengths = c["lengths"] if masked else NO_LENGTHS
    size, t, hidden = c["h_prev"].size, c["t"], c["hidden"]
    h_np, h_host = (np.empty_like(c["h_prev"]) for _ in range(2))
    fn.rnn_cell_forward(c["xw"], c["hw"], c["h_prev"], h_np, lengths=lengths, t=t, relu=relu)
    host_cell("rnn_cell_forward", [c["xw"], c["hw"], c["h_prev"], host_lengths, hidden, t, relu],
              [h_host], dtype, size)
    assert_same(h_host, h_np, dtype, "rnn forward h")
    dh_np, dh_host = c["dh"].copy(), c["dh"].copy()
    dpre_np, dpre_host = (np.empty_like(h_np) for _ in range(2))
    fn.rnn_cell_backward(h_np, c["dy"], c["dh_rec"], dh_np, dpre_np, lengths=lengths, t=t,
                         relu=relu)
    host_cell("rnn_cell_backward", [h_np, c["dy"], c["dh_rec"], host_lengths, hidden, t, relu],
              [dh_host, dpre_host], dtype, size)
    assert_same(dpre_host, dpre_np, dtype, "rnn backward dpre")
    assert_same(dh_host, dh_np, dtype, "rnn backward dh")
    if masked:
        assert (h_np[1] == c["h_prev"][1]).all() and (dpre_np[[1, 4]] == 0).all()


def lstm_forward_both(c, dtype, masked, preamble=None):
    lengths = c["lengths"] if masked else None
    host_lengths = c["lengths"] if masked else NO_LENGTHS
    outs = {}
    for who in ("numpy", "host"):
        gates = c["xw"].copy()
        c_out, h_out, tc_out = (np.empty_like(c["c_prev"]) for _ in range(3))
        if who == "numpy":
            fn.lstm_cell_forward(gates, c["hw"], c["c_prev"], c["h_prev"], c_out, h_out, tc_out,
                                 lengths=lengths, t=c["t"])
        else:
            sig = next(s for s in SIGNATURES["lstm_cell_forward"] if dtype in s.dtypes)
            hm.run_elementwise(KERNELS["lstm_cell_forward"],
                               [c["hw"], c["c_prev"], c["h_prev"], host_lengths, c["hidden"],
                                c["t"], gates, c_out, h_out, tc_out], sig.dtypes, c_out.size,
                               preamble)
        outs[who] = dict(act=gates, c=c_out, h=h_out, tanh_c=tc_out)
    return outs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
def test_lstm_cell_matches_numpy(dtype, masked):
    dtype_ok(dtype)
    c = cell_case("lstm", dtype)
    fwd = lstm_forward_both(c, dtype, masked)
    for key in ("act", "c", "h", "tanh_c"):
        assert_same(fwd["host"][key], fwd["numpy"][key], dtype, f"lstm forward {key}")
    saved = fwd["numpy"]
    lengths = c["lengths"] if masked else None
    outs = {}
    for who in ("numpy", "host"):
        dh, dc, dgates = c["dh"].copy(), c["dc"].copy(), np.empty_like(c["xw"])
        if who == "numpy":
            fn.lstm_cell_backward(saved["act"], c["c_prev"], saved["tanh_c"], c["dy"], c["dh_rec"],
                                  dh, dc, dgates, lengths=lengths, t=c["t"])
        else:
            host_cell("lstm_cell_backward",
                      [saved["act"], c["c_prev"], saved["tanh_c"], c["dy"], c["dh_rec"],
                       c["lengths"] if masked else NO_LENGTHS, c["hidden"], c["t"]],
                      [dh, dc, dgates], dtype, dh.size)
        outs[who] = dict(dh=dh, dc=dc, dgates=dgates)
    for key in ("dh", "dc", "dgates"):
        assert_same(outs["host"][key], outs["numpy"][key], dtype, f"lstm backward {key}")
    if masked:
        assert (saved["c"][4] == c["c_prev"][4]).all()
        assert (outs["numpy"]["dc"][4] == c["dc"][4]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
def test_gru_cell_matches_numpy(dtype, masked):
    dtype_ok(dtype)
    c = cell_case("gru", dtype)
    lengths = c["lengths"] if masked else None
    host_lengths = c["lengths"] if masked else NO_LENGTHS
    batch, hidden, t = c["h_prev"].shape[0], c["hidden"], c["t"]
    fwd = {}
    for who in ("numpy", "host"):
        act, h = np.empty((batch, 4 * hidden), dtype), np.empty_like(c["h_prev"])
        if who == "numpy":
            fn.gru_cell_forward(c["xw"], c["hw"], c["bias"], c["h_prev"], act, h, lengths=lengths,
                                t=t)
        else:
            host_cell("gru_cell_forward", [c["xw"], c["hw"], c["bias"], c["h_prev"], host_lengths,
                                           hidden, t], [act, h], dtype, h.size)
        fwd[who] = dict(act=act, h=h)
    for key in ("act", "h"):
        assert_same(fwd["host"][key], fwd["numpy"][key], dtype, f"gru forward {key}")
    act = fwd["numpy"]["act"]
    bwd = {}
    for who in ("numpy", "host"):
        dh, dgx, dgh = c["dh"].copy(), np.empty_like(c["xw"]), np.empty_like(c["xw"])
        if who == "numpy":
            fn.gru_cell_backward(act, c["h_prev"], c["dy"], c["dh_rec"], dh, dgx, dgh,
                                 lengths=lengths, t=t)
        else:
            host_cell("gru_cell_backward", [act, c["h_prev"], c["dy"], c["dh_rec"], host_lengths,
                                            hidden, t], [dh, dgx, dgh], dtype, dh.size)
        bwd[who] = dict(dh=dh, dgx=dgx, dgh=dgh)
    for key in ("dh", "dgx", "dgh"):
        assert_same(bwd["host"][key], bwd["numpy"][key], dtype, f"gru backward {key}")


def test_lstm_cell_float64_against_the_equations():
    """The twins follow PyTorch's LSTM equations (float64, no kernel involved)."""
    c = cell_case("lstm", "float64")
    fwd = lstm_forward_both(c, "float64", masked=False)["numpy"]
    pre = c["xw"] + c["hw"]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    i, f, g, o = (pre[:, k * 5:(k + 1) * 5] for k in range(4))
    c_new = sig(f) * c["c_prev"] + sig(i) * np.tanh(g)
    np.testing.assert_allclose(fwd["c"], c_new, rtol=1e-12)
    np.testing.assert_allclose(fwd["h"], sig(o) * np.tanh(c_new), rtol=1e-12, atol=1e-15)


def test_flipped_sign_in_rnn_header_is_caught():
    """The recurrent check is not vacuous: a sign error in the LSTM cell makes it fail."""
    spec = KERNELS["lstm_cell_forward"]
    broken = spec["preamble"].replace("fg * A(c_prev) + ig * gg", "fg * A(c_prev) - ig * gg")
    assert broken != spec["preamble"]
    c = cell_case("lstm", "float32")
    outs = lstm_forward_both(c, "float32", masked=False, preamble=broken)
    with pytest.raises(AssertionError):
        assert_same(outs["host"]["c"], outs["numpy"]["c"], "float32", "lstm c")


# --- masked softmax (attention) ------------------------------------------------------------------

def attention_case(dtype, mask_kind, shape=(2, 3, 5, 7), seed=9):
    """Scores with large and saturating entries, and a mask with a fully masked row."""
    rng = np.random.default_rng(seed)
    scores = (rng.standard_normal(shape) * 4).astype(dtype)
    scores.reshape(-1)[::13] = 60  # exp(60) would overflow float16 without the max shift
    batch, _, queries, keys = shape
    if mask_kind == "bool":  # True = may attend; batch 0 query 2 attends to nothing
        mask = rng.random((batch, 1, queries, keys)) > 0.3
        mask[0, 0, 2] = False
    elif mask_kind == "float":
        mask = rng.standard_normal((queries, keys)).astype(dtype)
        mask[1] = -np.inf
    else:
        mask = None
    return scores, mask, rng.standard_normal(shape).astype(dtype)


def host_masked_softmax(scores, mask, grad, scale, causal, preamble=None):
    """The kernels' forward and backward on the host, launched as the backends launch them."""
    from gpudl.backend.masked_softmax import compact_mask
    dt = scores.dtype.name
    queries, keys = scores.shape[-2:]
    rows = scores.size // keys
    flat_mask, *layout = (np.zeros(1, bool), 1, 1, 1) if mask is None else compact_mask(np, mask, scores.shape)
    i64, b, f64 = ("scalar", "int64"), ("scalar", "bool"), ("scalar", "float64")
    probs = scores.copy()
    hm.run_elementwise(KERNELS["masked_softmax_forward"],
                       [flat_mask, queries, keys, mask is not None, *layout, causal, scale, probs],
                       [flat_mask.dtype.name, i64, i64, b, i64, i64, i64, b, f64, dt], rows, preamble)
    grad = grad.copy()
    hm.run_elementwise(KERNELS["masked_softmax_backward"], [probs, queries, keys, causal, scale, grad],
                       [dt, i64, i64, b, f64, dt], rows, preamble)
    return probs, grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
@pytest.mark.parametrize("causal", [False, True])
def test_masked_softmax_matches_numpy(dtype, mask_kind, causal):
    from gpudl.backend import masked_softmax as twin
    dtype_ok(dtype)
    scores, mask, grad = attention_case(dtype, mask_kind)
    probs, score_grad = host_masked_softmax(scores, mask, grad, 0.5, causal)
    probs_np = twin.masked_softmax_forward(scores.copy(), mask, scale=0.5, causal=causal)
    assert_same(probs, probs_np, dtype, "masked softmax forward")
    grad_np = twin.masked_softmax_backward(probs_np, grad.copy(), scale=0.5, causal=causal)
    assert_same(score_grad, grad_np, dtype, "masked softmax backward")
    if mask_kind == "bool":
        assert (probs[0, :, 2] == 0).all() and (score_grad[0, :, 2] == 0).all()
    if causal:
        assert (probs[..., 0, 1:] == 0).all()


def test_flipped_sign_in_attention_header_is_caught():
    """The attention check is not vacuous: an inverted boolean mask in the header makes it fail."""
    from gpudl.backend import masked_softmax as twin
    spec = KERNELS["masked_softmax_forward"]
    broken = spec["preamble"].replace("return keep ? z : A(-CUDART_INF);", "return keep ? A(-CUDART_INF) : z;")
    assert broken != spec["preamble"]
    scores, mask, grad = attention_case("float32", "bool")
    probs, _ = host_masked_softmax(scores, mask, grad, 0.5, False, preamble=broken)
    with pytest.raises(AssertionError):
        assert_same(probs, twin.masked_softmax_forward(scores.copy(), mask, scale=0.5), "float32", "probs")
