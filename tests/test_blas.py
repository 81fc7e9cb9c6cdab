"""The CPU GEMM provider (gpudl.backend.blas): GPUDL_BLAS forcing and its errors, the measured choice and its
cache, gemm() routing through the provider, and -- where the ``gpudl[mkl]`` extra is installed -- MKL's results
against NumPy's."""
import json
import multiprocessing

import numpy as np
import pytest

import gpudl
from gpudl import nn, optim
from gpudl.backend import blas, openblas_pool
from gpudl.ops.linear import gemm
from tests.cli_helpers import one_error_line, run_cli

MKL_PATH = blas.mkl_library()
needs_mkl = pytest.mark.skipif(MKL_PATH is None, reason="the gpudl[mkl] extra (Intel's mkl wheel) is not installed")


@pytest.fixture(autouse=True)
def fresh_choice(monkeypatch, tmp_path):
    """Each test decides anew, with its own cache folder; the next test starts from the environment's choice."""
    monkeypatch.setenv("GPUDL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GPUDL_BLAS", raising=False)
    blas.reset()
    yield
    blas.reset()


class FakeMkl:
    """Stands in for a loaded MKL: records its construction, multiplies with NumPy."""
    loaded = 0
    kernels = {}  # no cblas functions: the recurrent layers step in Python with it

    def __init__(self, path, threads):
        FakeMkl.loaded += 1
        self.threads = threads

    def matmul(self, a, b, out=None):
        return np.matmul(a, b, out=out)


@pytest.fixture
def fake_mkl(monkeypatch):
    """An 'installed' MKL that is never loaded for real."""
    FakeMkl.loaded = 0
    monkeypatch.setattr(blas, "mkl_library", lambda: "/nonexistent/libmkl_rt.so.3")
    monkeypatch.setattr(blas, "Mkl", FakeMkl)
    return FakeMkl


def test_without_the_extra_numpy_is_chosen_and_matmul_is_numpys_own(monkeypatch):
    monkeypatch.setattr(blas, "mkl_library", lambda: None)
    monkeypatch.setenv("GPUDL_BLAS_THREADS", "own")  # shared: test_thread_pools.py
    choice = blas.choice()
    assert choice.name == "numpy" and "pip install gpudl[mkl]" in choice.reason
    assert blas.matmul is np.matmul  # no wrapper between gemm() and NumPy on its own threads


def test_forced_numpy_never_loads_or_measures_mkl(monkeypatch, fake_mkl):
    monkeypatch.setenv("GPUDL_BLAS", "numpy")
    monkeypatch.setenv("GPUDL_BLAS_THREADS", "own")
    monkeypatch.setattr(blas, "measure", lambda *a, **k: pytest.fail("measured although forced"))
    assert blas.choice().name == "numpy" and "forced" in blas.choice().reason
    assert fake_mkl.loaded == 0 and blas.matmul is np.matmul


def test_forced_mkl_skips_the_measurement(monkeypatch, fake_mkl):
    monkeypatch.setenv("GPUDL_BLAS", "MKL")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(blas, "measure", lambda *a, **k: pytest.fail("measured although forced"))
    choice = blas.choice()
    assert (choice.name, choice.threads, fake_mkl.loaded) == ("mkl", 3, 1)
    assert blas.matmul.__self__.threads == 3


def test_forced_mkl_without_the_extra_names_the_install_command(monkeypatch):
    monkeypatch.setattr(blas, "mkl_library", lambda: None)
    monkeypatch.setenv("GPUDL_BLAS", "mkl")
    with pytest.raises(blas.BlasError, match=r"GPUDL_BLAS=mkl .*pip install gpudl\[mkl\]"):
        blas.choice()


@pytest.mark.skipif(MKL_PATH is not None, reason="the mkl extra is installed here, so forcing it succeeds")
def test_gpudl_info_reports_forced_mkl_without_the_extra_in_one_line(monkeypatch):
    monkeypatch.setenv("GPUDL_BLAS", "mkl")
    assert "pip install gpudl[mkl]" in one_error_line(run_cli("info"))


def test_unknown_provider_is_rejected(monkeypatch):
    monkeypatch.setenv("GPUDL_BLAS", "openblas")
    with pytest.raises(blas.BlasError, match=r"GPUDL_BLAS='openblas' is not valid; valid values are: auto, numpy, mkl"):
        blas.choice()


@pytest.mark.parametrize("rates, expected", [((100.0, 200.0), "mkl"), ((100.0, 101.0), "numpy"),
                                             ((300.0, 150.0), "numpy")])
def test_auto_picks_mkl_only_when_measured_clearly_faster(monkeypatch, fake_mkl, rates, expected):
    monkeypatch.setattr(blas, "measure", lambda mkl_matmul, numpy_matmul: rates)
    choice = blas.choice()
    assert choice.name == expected and f"MKL {rates[1] / rates[0]:.2f}x" in choice.reason
    assert isinstance(getattr(blas.matmul, "__self__", None), FakeMkl) == (expected == "mkl")


def test_the_verdict_is_cached_next_to_the_cpu_kernels_and_reused(monkeypatch, fake_mkl, tmp_path):
    monkeypatch.setattr(blas, "measure", lambda mkl_matmul, numpy_matmul: (100.0, 250.0))
    assert blas.choice().name == "mkl"
    cached = json.loads((tmp_path / "cache" / "cpu-kernels" / "blas-choice.json").read_text())
    assert cached["choice"]["name"] == "mkl" and cached["key"]["threads"] == blas.thread_count()
    blas.reset()
    monkeypatch.setattr(blas, "measure", lambda *a, **k: pytest.fail("measured although cached"))
    assert blas.choice().name == "mkl"
    monkeypatch.setenv("OMP_NUM_THREADS", str(blas.thread_count() + 1))  # another key: measured again
    blas.reset()
    monkeypatch.setattr(blas, "measure", lambda mkl_matmul, numpy_matmul: (100.0, 50.0))
    assert blas.choice().name == "numpy"


def test_gemm_goes_through_the_chosen_provider(monkeypatch):
    calls = []

    def spy(a, b, out=None):
        calls.append((a.shape, b.shape, a.dtype))
        return np.matmul(a, b, out=out)

    monkeypatch.setattr(blas, "matmul", spy)
    layer = nn.Linear(4, 3, device="cpu")  # the provider serves the NumPy backend (also under the CuPy double)
    layer(gpudl.ones(5, 4, device="cpu")).sum().backward()
    assert calls == [((5, 4), (4, 3), np.float32), ((3, 5), (5, 4), np.float32)]  # forward, weight gradient
    half = gemm(np, np.ones((2, 3), np.float16), np.ones((3, 2), np.float16))
    assert calls[-1][2] == np.float32 and half.dtype == np.float16 and half.tolist() == [[3.0, 3.0]] * 2


@pytest.mark.parametrize("shape, strides, expected", [
    ((4, 6), None, ("no", 6)),  # C-contiguous
    ((6, 4), "T", ("trans", 6)),  # the transpose of a C-contiguous [4, 6]
    ((4, 3), "every other column", ("no", 3)),  # copied to a contiguous array
])
def test_cblas_operands_are_described_without_copies_where_possible(shape, strides, expected):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    x = {None: base, "T": base.T, "every other column": base[:, ::2]}[strides]
    array, flag, leading, batch_stride = openblas_pool.cblas_operand(x)
    assert array.shape == shape and (flag == openblas_pool.TRANS, leading) == (expected[0] == "trans", expected[1])
    assert batch_stride == (0, 0)
    assert (array is x) == (strides != "every other column")
    np.testing.assert_array_equal(array, x)


# ------------------------------------------------------------------ MKL itself (only with the extra installed)
def mkl_matmul(monkeypatch):
    monkeypatch.setenv("GPUDL_BLAS", "mkl")
    blas.reset()
    assert blas.choice().name == "mkl"
    return blas.matmul


@needs_mkl
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_mkl_equals_numpy_for_plain_transposed_and_batched_operands(monkeypatch, dtype, rtol):
    matmul = mkl_matmul(monkeypatch)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((37, 19)).astype(dtype), rng.standard_normal((19, 23)).astype(dtype)
    cases = [(a, b), (b.T, a.T), (np.ascontiguousarray(a.T).T, b), (a[:, ::2], b[::2]), (a[:0], b)]
    for left, right in cases:
        np.testing.assert_allclose(matmul(left, right), np.matmul(left, right), rtol=rtol, atol=rtol * 10)
    out = np.empty((3, 5, 4), dtype)
    a3, b3 = rng.standard_normal((3, 5, 7)).astype(dtype), rng.standard_normal((3, 4, 7)).astype(dtype)
    assert matmul(a3, b3.transpose(0, 2, 1), out=out) is out
    np.testing.assert_allclose(out, a3 @ b3.transpose(0, 2, 1), rtol=rtol, atol=rtol * 10)
    strided_out = np.zeros((5, 8), dtype)[:, ::2]
    matmul(a3[0], b3[0].T, out=strided_out)
    np.testing.assert_allclose(strided_out, a3[0] @ b3[0].T, rtol=rtol, atol=rtol * 10)
    square = rng.standard_normal((6, 6)).astype(dtype)
    expected = square @ square
    np.testing.assert_allclose(matmul(square, square, out=square), expected, rtol=rtol, atol=rtol * 10)  # aliased
    with pytest.raises(ValueError):
        matmul(a, b, out=np.empty((37, 22), dtype))


@needs_mkl
def test_mkl_float16_gemm_rounds_the_float32_product_once(monkeypatch):
    mkl_matmul(monkeypatch)
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((16, 40)).astype(np.float16), rng.standard_normal((40, 8)).astype(np.float16)
    expected = (a.astype(np.float32) @ b.astype(np.float32)).astype(np.float16)
    np.testing.assert_allclose(gemm(np, a, b).astype(np.float32), expected.astype(np.float32), rtol=2e-3, atol=2e-3)


def linear_training_step(dtype):
    """Weights and loss after one SGD step of a two-layer MLP on fixed data."""
    gpudl.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 5)).to("cpu", dtype)
    sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(3)
    x = gpudl.from_numpy(rng.standard_normal((32, 20)).astype(dtype))
    y = gpudl.from_numpy(rng.integers(0, 5, 32))
    loss = nn.functional.cross_entropy(model(x), y)
    sgd.zero_grad()
    loss.backward()
    sgd.step()
    return [p.numpy().copy() for p in model.parameters()] + [loss.numpy()]


@needs_mkl
@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-12)])
def test_a_linear_training_step_is_the_same_on_both_providers(monkeypatch, dtype, rtol):
    monkeypatch.setenv("GPUDL_BLAS", "numpy")
    blas.reset()
    on_numpy = linear_training_step(dtype)
    mkl_matmul(monkeypatch)
    on_mkl = linear_training_step(dtype)
    for expected, actual in zip(on_numpy, on_mkl):
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol)


def lstm_layer_results(dtype):
    """Outputs and gradients of an LSTM layer over 5 steps of a batch of 40 (split over threads)."""
    rng = np.random.default_rng(5)
    tensors = [gpudl.tensor(rng.standard_normal(shape).astype(dtype) * 0.3, requires_grad=True)
               for shape in ((5, 40, 8), (128, 8), (128, 32), (128,), (128,))]
    x, w_ih, w_hh, b_ih, b_hh = tensors
    y, h_n, c_n = gpudl.ops.rnn.lstm_layer(x, None, None, w_ih, w_hh, b_ih, b_hh)
    (y.sum() + h_n.sum() + c_n.sum()).backward()
    return [y.numpy(), h_n.numpy(), c_n.numpy()] + [t.grad.numpy() for t in tensors]


@needs_mkl
@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-12)])
def test_recurrent_layers_run_whole_sequences_on_mkl_as_on_numpy(monkeypatch, dtype, rtol):
    from gpudl.backend import cpu_kernels, fused_native
    if cpu_kernels.status().path != "native":
        pytest.skip("the whole-sequence runner needs the compiled CPU kernels")
    monkeypatch.setenv("GPUDL_BLAS", "numpy")
    blas.reset()
    on_numpy = lstm_layer_results(dtype)
    mkl_matmul(monkeypatch)
    gemm = blas.single_thread_gemm(dtype)
    assert not gemm.ilp64 and fused_native.recurrence_runner(dtype, (128, 32)).gemm is gemm  # MKL's own
    for expected, actual in zip(on_numpy, lstm_layer_results(dtype), strict=True):
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def multiply_and_check(matmul, a, b):
    """Exit status 0 when ``matmul`` (in a forked child) gives NumPy's product."""
    raise SystemExit(0 if np.allclose(matmul(a, b), a @ b, rtol=1e-4, atol=1e-3) else 1)


@needs_mkl
def test_mkl_still_multiplies_in_a_forked_child(monkeypatch):
    matmul = mkl_matmul(monkeypatch)
    a = np.random.default_rng(4).standard_normal((256, 256)).astype(np.float32)
    matmul(a, a)  # MKL's OpenMP threads exist before the fork
    child = multiprocessing.get_context("fork").Process(target=multiply_and_check, args=(matmul, a, a))
    child.start()
    child.join(60)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0, "a forked child's MKL product hung or was wrong"
