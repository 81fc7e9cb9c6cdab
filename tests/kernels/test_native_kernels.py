"""The NumPy backend's compiled CPU kernels (gpudl.backend.fused_native) against the NumPy twins.

Every fused op and dtype, at sizes that take the OpenMP path as well as small ones, contiguous and
strided; the path selection (GPUDL_CPU_KERNELS, a missing compiler); the library cache (corrupt
and foreign files rebuilt, two processes building at once).
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from gpudl.backend import cpu_kernels, fused_native, fused_numpy, host_compiler, native_kernels
from gpudl.backend.kernel_specs import ACTIVATIONS, KERNELS
from gpudl.backend.selection import BackendError

from tests.conftest import subprocess_env

pytestmark = pytest.mark.skipif(
    not host_compiler.shutil.which(host_compiler.compiler()),
    reason=f"no C++ compiler {host_compiler.compiler()!r} on PATH: the CPU kernels cannot be built")

DTYPES = ["float16", "float32", "float64"]
# glibc's exp/erf/tanh against NumPy's SIMD loops: a few ulp; float16 rounds once from float32.
TOL = {"float16": dict(rtol=2e-3, atol=1e-3), "float32": dict(rtol=1e-5, atol=1e-5),
       "float64": dict(rtol=1e-13, atol=1e-13)}
PARAMS = {"leaky_relu": {"negative_slope": 0.2}, "elu": {"alpha": 1.5},
          "softplus": {"beta": 2.0, "threshold": 10.0}}
BIG = 3 * native_kernels.PARALLEL_MIN_CHEAP // 2  # past every OpenMP threshold


@pytest.fixture(autouse=True)
def _every_op_native():
    """Compare the kernels themselves, also for the ops ``auto`` leaves to the twins."""
    previous = fused_native.prefer_twins_where_faster(False)
    yield
    fused_native.prefer_twins_where_faster(previous)


def edge_values(dtype, size=BIG):
    edges = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 3.0, -3.0, 10.0, -10.0, 30.0, -30.0, 100.0, -100.0,
             np.inf, -np.inf, np.nan, 1e-3, -1e-3]
    rng = np.random.default_rng(0)
    x = np.concatenate([edges, rng.standard_normal(size - len(edges)) * 4])
    return x.astype(dtype)


def assert_close(got, want, dtype, what=""):
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype, got.shape)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN positions")
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), err_msg=what,
                               equal_nan=True, **TOL[dtype])


def layouts(x):
    """The array itself, a strided 1-D view and a transposed 2-D view."""
    return [x, x[::3], x[: (x.size // 200) * 200].reshape(200, -1).T]


# --- activations ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_twin(name, dtype):
    params = PARAMS.get(name, {})
    for x in layouts(edge_values(dtype)):
        y = fused_native.activation_forward(name, x, **params)
        y_twin = fused_numpy.activation_forward(name, x, **params)
        gy = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
        gx = fused_native.activation_backward(name, x, y_twin, gy, **params)
        gx_twin = fused_numpy.activation_backward(name, x, y_twin, gy, **params)
        if name in ("relu", "leaky_relu"):  # one compare and one multiply: exact
            np.testing.assert_array_equal(y, y_twin)
            np.testing.assert_array_equal(gx, gx_twin)
        assert_close(y, y_twin, dtype, f"{name} forward {x.shape}")
        assert_close(gx, gx_twin, dtype, f"{name} backward {x.shape}")


def test_activation_keeps_a_dense_layout():
    """A channels-last view (as max pooling leaves it) runs in memory order, the output in the
    same layout (as NumPy's ufuncs), with the twin's values; a gappy view is copied first."""
    x = edge_values("float32", 4 * 8 * 6 * 6).reshape(6, 6, 4, 8).transpose(2, 3, 0, 1)
    for view in (x, x[:, ::2]):
        y = fused_native.activation_forward("relu", view)
        np.testing.assert_array_equal(y, fused_numpy.activation_forward("relu", view))
        gx = fused_native.activation_backward("relu", None, y, view)
        np.testing.assert_array_equal(gx, fused_numpy.activation_backward("relu", None, y, view))
    assert fused_native.activation_forward("relu", x).strides == x.strides
    y = fused_native.activation_forward("relu", x)  # mixed layouts: a C-order result
    for y_, gy in ((y, np.ascontiguousarray(x)), (np.ascontiguousarray(y), x)):
        gx = fused_native.activation_backward("relu", None, y_, gy)
        assert gx.flags.c_contiguous
        np.testing.assert_array_equal(gx, fused_numpy.activation_backward("relu", None, y_, gy))


def test_activation_errors_match_twin():
    x = np.zeros(4, np.int32)
    for module in (fused_native, fused_numpy):
        with pytest.raises(TypeError, match="relu: expected a float16/float32/float64 array"):
            module.activation_forward("relu", x)
        with pytest.raises(ValueError, match="unknown activation 'nope'"):
            module.activation_forward("nope", x.astype(np.float32))
        with pytest.raises(ValueError, match="sigmoid backward needs y"):
            module.activation_backward("sigmoid", x, None, x)


# --- softmax cross-entropy -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tdtype", ["int64", "int32", "uint8", "int8"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_softmax_cross_entropy_matches_twin(dtype, tdtype, eps):
    rng = np.random.default_rng(2)
    n, c = 1000, 10
    logits = (rng.standard_normal((n, c)) * 3).astype(dtype)
    logits[0, 3] = 6e4 if dtype == "float16" else 1e4
    logits[1, :] = -6e4 if dtype == "float16" else -1e4
    logits[2, 5] = -np.inf
    ignore = 100 if tdtype in ("uint8", "int8") else -100
    targets = rng.integers(0, c, n).astype(tdtype)
    targets[[4, 9]] = ignore
    loss, lse = fused_native.softmax_cross_entropy_forward(logits, targets, ignore, eps)
    loss_twin, lse_twin = fused_numpy.softmax_cross_entropy_forward(logits, targets, ignore, eps)
    assert loss[4] == 0 and loss[9] == 0
    assert_close(lse, lse_twin, dtype, "lse")
    assert_close(loss, loss_twin, dtype, "loss")
    gloss = rng.standard_normal(n).astype(dtype)
    for view in (logits, np.asfortranarray(logits)):
        g = fused_native.softmax_cross_entropy_backward(view, lse_twin, targets, gloss, ignore, eps)
        g_twin = fused_numpy.softmax_cross_entropy_backward(logits, lse_twin, targets, gloss,
                                                            ignore, eps)
        assert (g[4] == 0).all()
        assert_close(g, g_twin, dtype, "grad")


def test_softmax_cross_entropy_bad_target_raises_like_twin():
    logits = np.zeros((3, 4), np.float32)
    for module in (fused_native, fused_numpy):
        with pytest.raises(IndexError, match=r"target 7 is out of bounds: valid range is \[0, 4\)"):
            module.softmax_cross_entropy_forward(logits, np.array([0, 7, 1]))
        with pytest.raises(ValueError, match=r"targets must have shape \(3,\)"):
            module.softmax_cross_entropy_forward(logits, np.array([0, 1]))


# --- dropout ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_dropout_bit_identical(dtype, p):
    """The mask is a hash of (seed, step, C-order index): identical, in every layout."""
    x = (np.random.default_rng(4).standard_normal((301, 300)) + 2).astype(dtype)
    seed, step = 2**63 + 12345, 7
    for view in (x, x.T, x[::2, 1::3], x[:5]):
        y = fused_native.dropout_forward(view, p, seed, step)
        np.testing.assert_array_equal(y, fused_numpy.dropout_forward(view, p, seed, step))
        np.testing.assert_array_equal(fused_native.dropout_backward(view, p, seed, step), y)
    with pytest.raises(ValueError, match="dropout probability must be in"):
        fused_native.dropout_forward(x, 1.5, seed, step)


# --- optimizers -----------------------------------------------------------------------------------

SGD_CASES = [dict(momentum=0.0, weight_decay=0.0), dict(momentum=0.0, weight_decay=0.01),
             dict(momentum=0.9), dict(momentum=0.9, dampening=0.1, weight_decay=1e-3),
             dict(momentum=0.9, nesterov=True, weight_decay=1e-3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [500, BIG])
@pytest.mark.parametrize("case", range(len(SGD_CASES)))
def test_sgd_bit_identical(dtype, size, case):
    """Same operation order, no FMA contraction: the same bits as the twin."""
    kw = SGD_CASES[case]
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(size).astype(dtype)
    state = {m: (p0.copy(), np.zeros_like(p0)) for m in ("native", "twin")}
    for k in range(3):
        g = rng.standard_normal(size).astype(dtype)
        for module, name in ((fused_native, "native"), (fused_numpy, "twin")):
            p, buf = state[name]
            module.sgd_update(p, g, buf if kw["momentum"] else None, lr=0.1, first_step=k == 0,
                              **kw)
    np.testing.assert_array_equal(state["native"][0], state["twin"][0])
    np.testing.assert_array_equal(state["native"][1], state["twin"][1])
    assert not np.array_equal(state["native"][0], p0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("decoupled,wd", [(False, 0.0), (False, 0.01), (True, 0.01)])
def test_adam_bit_identical(dtype, amsgrad, decoupled, wd):
    rng = np.random.default_rng(6)
    p0 = rng.standard_normal(BIG).astype(dtype)
    state = {m: [p0.copy()] + [np.zeros_like(p0) for _ in range(3)] for m in ("native", "twin")}
    for t in range(1, 4):
        g = rng.standard_normal(BIG).astype(dtype)
        for module, name in ((fused_native, "native"), (fused_numpy, "twin")):
            p, m, v, vmax = state[name]
            module.adam_update(p, g, m, v, vmax if amsgrad else None, step=t, lr=1e-2,
                               weight_decay=wd, amsgrad=amsgrad, decoupled=decoupled)
    for got, want in zip(state["native"], state["twin"]):
        np.testing.assert_array_equal(got, want)


# --- recurrent cells -------------------------------------------------------------------------------

# The host runs the cells as rows x units, units vectorised: serial and parallel (PARALLEL_MIN),
# hidden sizes with and without a remainder after the last full vector.
CELL_SIZES = [(3, 37), (64, 131), (64, 160)]


def cell_arrays(gates, dtype, batch=64, hidden=160, seed=0):
    """Random cell inputs (some gates saturating) and lengths that end some rows before t=2."""
    rng = np.random.default_rng(seed)

    def r(*shape, scale=2.0):
        a = rng.standard_normal(shape) * scale
        a.reshape(-1)[::17] *= 15
        return a.astype(dtype)

    return dict(xw=r(batch, gates * hidden), hw=r(batch, gates * hidden),
                bias=r(gates * hidden, scale=0.5), h_prev=r(batch, hidden, scale=0.8),
                c_prev=r(batch, hidden), dy=r(batch, hidden, scale=1.0),
                dh_rec=r(batch, hidden, scale=1.0), dh=r(batch, hidden, scale=1.0),
                dc=r(batch, hidden, scale=1.0),
                lengths=rng.integers(1, 5, batch).astype(np.int64))


def both(call, make_outs):
    """Run ``call(module, *outs)`` for the native kernels and the twin on fresh outputs."""
    results = {}
    for module in (fused_native, fused_numpy):
        outs = make_outs()
        call(module, *outs)
        results[module] = outs
    return results[fused_native], results[fused_numpy]


def assert_all_close(native, twin, dtype, what):
    for k, (got, want) in enumerate(zip(native, twin)):
        assert_close(got, want, dtype, f"{what} output {k}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("batch, hidden", CELL_SIZES)
def test_rnn_cells_match_twin(dtype, masked, batch, hidden):
    for relu in (False, True):
        c = cell_arrays(1, dtype, batch, hidden)
        kw = dict(lengths=c["lengths"] if masked else None, t=2, relu=relu)
        native, twin = both(lambda m, h: m.rnn_cell_forward(c["xw"], c["hw"], c["h_prev"], h, **kw),
                            lambda: [np.empty_like(c["h_prev"])])
        assert_all_close(native, twin, dtype, f"rnn forward relu={relu}")
        h = twin[0]
        native, twin = both(lambda m, dh, dpre: m.rnn_cell_backward(h, c["dy"], c["dh_rec"], dh, dpre,
                                                                    **kw),
                            lambda: [c["dh"].copy(), np.empty_like(h)])
        assert_all_close(native, twin, dtype, f"rnn backward relu={relu}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("batch, hidden", CELL_SIZES)
def test_lstm_cell_matches_twin(dtype, masked, batch, hidden):
    c = cell_arrays(4, dtype, batch, hidden)
    kw = dict(lengths=c["lengths"] if masked else None, t=2)
    native, twin = both(
        lambda m, gates, c_, h, tc: m.lstm_cell_forward(gates, c["hw"], c["c_prev"], c["h_prev"],
                                                        c_, h, tc, **kw),
        lambda: [c["xw"].copy()] + [np.empty_like(c["c_prev"]) for _ in range(3)])
    assert_all_close(native, twin, dtype, "lstm forward")
    act, _, _, tanh_c = twin
    native, twin = both(
        lambda m, dh, dc, dg: m.lstm_cell_backward(act, c["c_prev"], tanh_c, c["dy"], c["dh_rec"],
                                                   dh, dc, dg, **kw),
        lambda: [c["dh"].copy(), c["dc"].copy(), np.empty_like(c["xw"])])
    assert_all_close(native, twin, dtype, "lstm backward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("batch, hidden", CELL_SIZES)
def test_gru_cell_matches_twin(dtype, masked, batch, hidden):
    c = cell_arrays(3, dtype, batch, hidden)
    kw = dict(lengths=c["lengths"] if masked else None, t=2)
    native, twin = both(
        lambda m, act, h: m.gru_cell_forward(c["xw"], c["hw"], c["bias"], c["h_prev"], act, h, **kw),
        lambda: [np.empty((batch, 4 * hidden), dtype), np.empty_like(c["h_prev"])])
    assert_all_close(native, twin, dtype, "gru forward")
    act = twin[0]
    native, twin = both(
        lambda m, dh, dgx, dgh: m.gru_cell_backward(act, c["h_prev"], c["dy"], c["dh_rec"], dh, dgx,
                                                    dgh, **kw),
        lambda: [c["dh"].copy(), np.empty_like(c["xw"]), np.empty_like(c["xw"])])
    assert_all_close(native, twin, dtype, "gru backward")


@pytest.mark.parametrize("module", [fused_native, fused_numpy], ids=["native", "twin"])
def test_gru_backward_gives_ended_rows_zero_gate_gradients_even_from_nan(module):
    """An ended row passes its state gradient through and gets exact zeros, whatever its saved
    activations hold (the kernel selects; it must not compute 0 * NaN)."""
    c = cell_arrays(3, "float32", batch=3, hidden=37)
    act = np.full((3, 4 * 37), np.nan, np.float32)
    lengths = np.array([1, 5, 2], np.int64)  # rows 0 and 2 have ended at t=2
    dh, dgx, dgh = c["dh"].copy(), np.empty_like(c["xw"]), np.empty_like(c["xw"])
    module.gru_cell_backward(act, c["h_prev"], c["dy"], c["dh_rec"], dh, dgx, dgh, lengths=lengths,
                             t=2)
    ended = [0, 2]
    assert (dgx[ended] == 0).all() and (dgh[ended] == 0).all()
    np.testing.assert_allclose(dh[ended], (c["dh_rec"] + c["dh"])[ended], rtol=1e-6)
    assert np.isnan(dgx[1]).all()


def test_every_native_op_has_a_twin():
    """fused_native covers the twin's ops (unlisted ones fall through to the twin itself)."""
    for name in fused_native.__all__:
        assert callable(getattr(fused_numpy, name)) or name == "ACTIVATION_BACKWARD_USES", name
        assert name in vars(fused_native), name
    assert fused_native.splitmix64_int is fused_numpy.splitmix64_int  # falls through


def test_auto_leaves_the_listed_ops_to_the_twins(monkeypatch):
    """With twins preferred, exactly the ops of TWIN_FASTER call the twin."""
    known = {f"{name}_{d}" for name in ACTIVATIONS for d in ("forward", "backward")}
    assert fused_native.TWIN_FASTER <= known | set(fused_native.__all__)
    calls = []
    for op in ("activation_forward", "softmax_cross_entropy_forward", "sgd_update"):
        monkeypatch.setattr(fused_numpy, op,
                            lambda *a, _op=op, **k: calls.append((_op, a[0] if _op[0] == "a" else "")))
    x = edge_values("float32", 100)
    assert fused_native.prefer_twins_where_faster(True) is False
    fused_native.activation_forward("tanh", x)
    fused_native.activation_forward("relu", x)
    fused_native.softmax_cross_entropy_forward(x.reshape(10, 10), np.arange(10))
    fused_native.sgd_update(x.copy(), x, None, lr=0.1)
    assert calls == [("activation_forward", "tanh"), ("softmax_cross_entropy_forward", "")]
    fused_native.prefer_twins_where_faster(False)
    fused_native.activation_forward("tanh", x)
    assert len(calls) == 2


def test_every_kernel_builds_for_the_host():
    """Each kernel in KERNELS, with every dtype signature, compiles and loads (cached)."""
    for name in KERNELS:
        kern = native_kernels.kernel(name)
        assert len(kern.entries) == len(native_kernels.dtype_signatures(name)), name


def test_kernel_call_errors():
    relu = native_kernels.kernel("relu_forward")
    with pytest.raises(TypeError, match=r"relu_forward: no native signature for array arguments "
                                        r"\[dtype\('int32'\)"):
        relu(np.zeros(3, np.int32))
    with pytest.raises(TypeError, match="relu_forward: expected 1 or 2 arguments, got 3"):
        relu(np.zeros(3), np.zeros(3), np.zeros(3))


# --- masked softmax (attention) -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_masked_softmax_matches_twin(dtype, causal):
    """Every mask kind, over enough rows (one per query) to take the OpenMP path."""
    from gpudl.backend import masked_softmax
    rng = np.random.default_rng(8)
    shape = (4, 2, native_kernels.PARALLEL_MIN // 6, 9)
    scores = (rng.standard_normal(shape) * 4).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    masks = [None, rng.random((4, 1, 1, 9)) > 0.3, rng.random(shape[-2:]) > 0.2,
             np.where(rng.random((2, 1, 9)) > 0.2, rng.standard_normal((2, 1, 9)), -np.inf).astype(dtype)]
    for mask in masks:
        probs = fused_native.masked_softmax_forward(scores.copy(), mask, scale=0.3, causal=causal)
        probs_twin = masked_softmax.masked_softmax_forward(scores.copy(), mask, scale=0.3, causal=causal)
        assert_close(probs, probs_twin, dtype, "masked softmax forward")
        g = fused_native.masked_softmax_backward(probs_twin, grad.copy(), scale=0.3, causal=causal)
        g_twin = masked_softmax.masked_softmax_backward(probs_twin, grad.copy(), scale=0.3, causal=causal)
        assert_close(g, g_twin, dtype, "masked softmax backward")


# --- choosing the path ------------------------------------------------------------------------------

@pytest.fixture
def fresh_choice(monkeypatch):
    """Let a test decide the path again; the process's own decision comes back afterwards."""
    saved = cpu_kernels._status
    cpu_kernels.reset()
    yield monkeypatch
    cpu_kernels._status = saved
    host_compiler.compiler_identity.cache_clear()


def test_numpy_path_on_request(fresh_choice):
    fresh_choice.setenv("GPUDL_CPU_KERNELS", "numpy")
    assert cpu_kernels.status() == ("numpy", "GPUDL_CPU_KERNELS=numpy", 0)
    assert cpu_kernels.fused_module() is fused_numpy


def test_native_path_on_request(fresh_choice):
    fresh_choice.setenv("GPUDL_CPU_KERNELS", "native")
    status = cpu_kernels.status()
    assert status.path == "native" and status.threads >= 1
    assert host_compiler.compiler_identity(host_compiler.compiler())[1] in status.reason
    assert cpu_kernels.fused_module() is fused_native


def test_invalid_choice_is_an_error(fresh_choice):
    fresh_choice.setenv("GPUDL_CPU_KERNELS", "fast")
    with pytest.raises(BackendError, match="GPUDL_CPU_KERNELS='fast' is not valid; valid values "
                                           "are: auto, native, numpy"):
        cpu_kernels.status()


def test_missing_compiler_falls_back_with_one_line(fresh_choice, capsys):
    fresh_choice.setenv("GPUDL_CPU_KERNELS", "auto")
    fresh_choice.setenv("CXX", "no-such-compiler-gpudl")
    status = cpu_kernels.status()
    assert status.path == "numpy" and "no-such-compiler-gpudl" in status.reason
    assert cpu_kernels.fused_module() is fused_numpy
    cpu_kernels.status()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CPU fused ops use the NumPy twins" in err
    assert "C++ compiler 'no-such-compiler-gpudl' not found" in err


def test_missing_compiler_with_native_is_an_error(fresh_choice):
    fresh_choice.setenv("GPUDL_CPU_KERNELS", "native")
    fresh_choice.setenv("CXX", "no-such-compiler-gpudl")
    with pytest.raises(BackendError, match="GPUDL_CPU_KERNELS=native, but the CPU kernels cannot "
                                           "be built: C\\+\\+ compiler 'no-such-compiler-gpudl'"):
        cpu_kernels.status()


def test_backend_uses_the_chosen_path():
    """In this process the NumPy backend's fused ops are what GPUDL_CPU_KERNELS asked for."""
    from gpudl import backend
    want = fused_numpy if os.environ.get("GPUDL_CPU_KERNELS") == "numpy" else fused_native
    assert backend.NUMPY.fused is want


def test_a_forked_child_runs_the_kernels():
    """libgomp's threads do not survive fork(): the child runs on one thread instead of hanging."""
    x = np.random.default_rng(0).standard_normal(BIG).astype(np.float32)
    fused_native.activation_forward("relu", x)  # the parent's thread pool exists now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        ok = np.array_equal(fused_native.activation_forward("relu", x), np.maximum(x, 0))
        os.write(write, b"ok" if ok else b"wrong")
        os._exit(0)
    os.close(write)
    deadline, done = time.monotonic() + 60, 0
    while not done and time.monotonic() < deadline:
        time.sleep(0.05)
        done, _ = os.waitpid(pid, os.WNOHANG)
    if not done:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in its first parallel loop")
    assert os.read(read, 16) == b"ok"


# --- the cache --------------------------------------------------------------------------------------

SOURCE = 'extern "C" int answer() { return %d; }\n'


def test_corrupt_or_foreign_library_is_rebuilt(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUDL_CACHE_DIR", str(tmp_path))
    flags = ("-O0",)
    for k, damage in enumerate(("garbage", "foreign")):
        source = SOURCE % (40 + k)
        target = tmp_path / "cpu-kernels" / f"t-{host_compiler.library_key(source, flags)}.so"
        target.parent.mkdir(exist_ok=True)
        if damage == "garbage":
            target.write_bytes(b"\x7fELF not really a library")
        else:  # a valid library built from another source
            other = host_compiler.build(SOURCE % 7 + "// other\n", flags, name="other")
            target.write_bytes((tmp_path / "cpu-kernels" / os.path.basename(other._name)).read_bytes())
        lib = host_compiler.build(source, flags, name="t")
        assert lib.answer() == 40 + k


def test_stale_source_gets_a_new_library(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUDL_CACHE_DIR", str(tmp_path))
    first = host_compiler.build(SOURCE % 1, ("-O0",), name="t")
    second = host_compiler.build(SOURCE % 2, ("-O0",), name="t")
    assert first._name != second._name and (first.answer(), second.answer()) == (1, 2)
    assert host_compiler.library_key(SOURCE % 1, ("-O0",)) != host_compiler.library_key(SOURCE % 1,
                                                                                           ("-O1",))


def test_two_processes_build_at_once(tmp_path):
    """Both build the same library into an empty cache at the same moment; both succeed."""
    script = textwrap.dedent("""
        import sys, time
        import numpy as np
        from gpudl.backend import native_kernels
        time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
        y = native_kernels.kernel("silu_forward")(np.linspace(-3, 3, 50000))
        print(float(y.sum()))
    """)
    env = subprocess_env(GPUDL_CACHE_DIR=str(tmp_path))
    start = str(time.time() + 1.0)
    procs = [subprocess.Popen([sys.executable, "-c", script, start], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    x = np.linspace(-3, 3, 50000)
    want = float((x / (1 + np.exp(-x))).sum())
    assert [float(o) for o, _ in outputs] == pytest.approx([want, want], rel=1e-12)
    libraries = list((tmp_path / "cpu-kernels").glob("gpudl_silu_forward-*.so"))
    assert len(libraries) == 1 and not list((tmp_path / "cpu-kernels").glob(".build-*"))
