"""One thread pool for the CPU: NumPy's OpenBLAS run on gpudl's OpenMP threads (gpudl.backend.openblas_pool,
chosen by gpudl.backend.blas under GPUDL_BLAS_THREADS). Checks that the shared pool is what runs (OpenBLAS on
one thread, the GEMM on the kernels' OpenMP threads), that its products equal single-threaded OpenBLAS's
(to the last bits) and are reproducible in every blocking it uses, that a forked child and two Python threads
calling GEMMs and kernels at once work, and that GPUDL_BLAS_THREADS=own restores OpenBLAS's own threads."""
import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from gpudl.backend import blas, cpu_kernels, openblas_pool

native = pytest.mark.skipif(cpu_kernels.status().path != "native",
                            reason="no compiled CPU kernels (GPUDL_CPU_KERNELS=numpy or no compiler): no OpenMP "
                                   "pool to share")


@pytest.fixture(autouse=True)
def fresh_choice(monkeypatch):
    """Each test chooses anew from its environment; NumPy's BLAS on the default threads afterwards."""
    monkeypatch.delenv("GPUDL_BLAS", raising=False)
    monkeypatch.delenv("GPUDL_BLAS_THREADS", raising=False)
    monkeypatch.setattr(blas, "mkl_library", lambda: None)
    blas.reset()
    yield
    blas.reset()


def shared_matmul():
    """The shared-pool matmul (skips where NumPy's BLAS is not a loadable OpenBLAS)."""
    choice = blas.choice()
    if not choice.pool.startswith("shared"):
        pytest.skip(f"NumPy's BLAS cannot be shared here: {choice.pool}")
    return blas.matmul


@native
def test_shared_pool_is_the_default_and_openblas_runs_on_one_thread():
    matmul = shared_matmul()
    choice = blas.choice()
    assert choice.name == "numpy" and choice.threads == cpu_kernels.status().threads
    assert blas._pooled.openblas.get_threads() == 1
    assert f"gpudl's {choice.threads} OpenMP threads" in blas.describe()
    a = np.ones((3, 4), np.float32)
    assert matmul(a, a.T).tolist() == [[4.0] * 3] * 3


def test_the_openblas_found_is_numpys():
    path = openblas_pool.numpy_openblas_path()
    blas_info = np.__config__.CONFIG["Build Dependencies"]["blas"]
    if path is None or "openblas" not in blas_info.get("name", ""):
        pytest.skip(f"NumPy's BLAS is not a loaded OpenBLAS: {blas_info.get('name')}")
    library = openblas_pool.OpenBlas(path)
    assert blas_info["version"] in library.config
    assert library.ilp64 == ("USE64BITINT" in blas_info.get("openblas configuration", ""))


@native
def test_own_threads_give_openblas_its_thread_count_back(monkeypatch):
    shared_matmul()
    before = blas._pooled.own_count
    monkeypatch.setenv("GPUDL_BLAS_THREADS", "own")
    blas.reset()
    assert blas.choice().pool.startswith("own: NumPy's BLAS on its own threads (GPUDL_BLAS_THREADS=own)")
    assert blas.matmul is np.matmul and blas._pooled.openblas.get_threads() == before


def test_twin_kernels_leave_openblas_on_its_own_threads(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "status", lambda: cpu_kernels.Status("numpy", "forced"))
    assert "the CPU kernels are the NumPy twins" in blas.choice().pool and blas.matmul is np.matmul


def test_an_unknown_thread_choice_is_rejected(monkeypatch):
    monkeypatch.setenv("GPUDL_BLAS_THREADS", "both")
    with pytest.raises(blas.BlasError, match=r"GPUDL_BLAS_THREADS='both' is not valid; valid values are: shared, own"):
        blas.choice()


# (batch or None, m, k, n): split by columns, by rows, below the parallel threshold, a batch split across
# threads, a batch of one split inside its matrix, blocks that do not divide evenly, few rows by many
# columns (transposed: in 32-column slices where OpenBLAS has small-matrix kernels)
SHAPES = [(None, 64, 288, 1568), (None, 1000, 96, 40), (None, 32, 512, 10), (6, 49, 64, 49), (1, 300, 64, 300),
          (None, 37, 129, 1001), (None, 20, 300, 150)]


def operands(shape, dtype, layout):
    """Random operands of ``shape`` in ``layout``: C-contiguous, transposed views, or a strided copy case."""
    batch, m, k, n = shape
    generator = np.random.default_rng(m * n + k)
    lead = () if batch is None else (batch,)
    a = generator.standard_normal(lead + (m, k)).astype(dtype)
    b = generator.standard_normal(lead + (k, n)).astype(dtype)
    if layout == "transposed":
        a = np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
        b = np.ascontiguousarray(np.swapaxes(b, -1, -2)).swapaxes(-1, -2)
    elif layout == "strided":
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    return a, b


@native
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_shared_products_equal_single_threaded_openblas(shape, dtype, layout):
    matmul = shared_matmul()
    a, b = operands(shape, dtype, layout)
    got = matmul(a, b)
    # NumPy's matmul on the same OpenBLAS, now single-threaded, as the reference: equal but for the last bits
    # of elements that fall into another edge tile of OpenBLAS's kernel when the result is cut into blocks
    assert got.dtype == dtype and got.shape == a.shape[:-1] + b.shape[-1:]
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got, np.matmul(a, b), rtol=8 * eps, atol=8 * eps * np.sqrt(a.shape[-1]))
    out = np.full_like(got, np.nan)
    assert matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, got)  # the blocks depend only on the shape and thread count


@native
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_four_dimensional_products_run_as_one_batch(dtype):
    """Attention's [batch, heads, tokens, features] products, the keys transposed as a view."""
    matmul = shared_matmul()
    generator = np.random.default_rng(2)
    q = generator.standard_normal((2, 3, 50, 16)).astype(dtype)
    k = generator.standard_normal((2, 3, 50, 16)).astype(dtype)
    scores = matmul(q, np.swapaxes(k, -1, -2))
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(scores, np.matmul(q, np.swapaxes(k, -1, -2)), rtol=8 * eps, atol=32 * eps)
    qkv = generator.standard_normal((2, 50, 3, 3, 16)).astype(dtype)  # heads split from one projection
    q, k = (qkv[:, :, j].transpose(0, 2, 1, 3) for j in (0, 1))  # views whose batch strides do not merge
    np.testing.assert_allclose(matmul(q, np.swapaxes(k, -1, -2)), np.matmul(q, np.swapaxes(k, -1, -2)),
                               rtol=8 * eps, atol=32 * eps)
    assert matmul(np.ones((2, 0, 3, 4), dtype), np.ones((2, 0, 4, 5), dtype)).shape == (2, 0, 3, 5)


@native
def test_empty_and_zero_depth_products():
    matmul = shared_matmul()
    assert matmul(np.ones((0, 3), np.float32), np.ones((3, 4), np.float32)).shape == (0, 4)
    assert matmul(np.ones((2, 0), np.float32), np.ones((0, 4), np.float32)).tolist() == [[0.0] * 4] * 2


@pytest.mark.parametrize("make, expected, copied", [
    (lambda x: x, (openblas_pool.NO_TRANS, 6, (24, 0)), False),
    (lambda x: x.swapaxes(1, 2), (openblas_pool.TRANS, 6, (24, 0)), False),
    (lambda x: x[::-1], (openblas_pool.NO_TRANS, 6, (24, 0)), True),  # a negative batch stride
    # attention's queries: [batch, tokens, 3, heads, features] -> [batch, heads, tokens, features]
    (lambda x: x.reshape(2, 3, 3, 2, 2)[:, :, 0].transpose(0, 2, 1, 3), (openblas_pool.NO_TRANS, 12, (36, 2)), False),
    (lambda x: x.reshape(2, 3, 3, 2, 2)[:, :, 0].transpose(0, 2, 3, 1), (openblas_pool.TRANS, 12, (36, 2)), False),
    (lambda x: x.reshape(2, 3, 3, 4)[:, :, ::-1], (openblas_pool.NO_TRANS, 4, (36, 12)), True),
])
def test_batched_operands_carry_their_batch_strides(make, expected, copied):
    base = np.arange(72, dtype=np.float32).reshape(3, 4, 6)
    x = make(base)
    array, flag, leading, batch_strides = openblas_pool.cblas_operand(x)
    assert (flag, leading, batch_strides) == expected
    assert (array is not x) == copied
    np.testing.assert_array_equal(array, x)


def multiply_in_child(queue):
    """Run in a forked child: one large shared product and one kernel, results back through ``queue``."""
    from gpudl.backend import fused_native
    a = np.arange(512 * 512, dtype=np.float32).reshape(512, 512) % 7 - 3
    queue.put((blas.matmul(a, a), fused_native.activation_forward("relu", a)))


@native
def test_a_forked_child_multiplies_on_one_thread_instead_of_hanging():
    matmul = shared_matmul()
    a = np.arange(512 * 512, dtype=np.float32).reshape(512, 512) % 7 - 3
    matmul(a, a)  # the parent's OpenMP threads exist now; they do not survive fork()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=multiply_in_child, args=(queue,))
    child.start()
    product, relu = queue.get(timeout=120)
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0
    np.testing.assert_array_equal(product, np.matmul(a, a))
    np.testing.assert_array_equal(relu, np.maximum(a, 0))


@native
def test_two_python_threads_run_gemms_and_kernels_at_once():
    from gpudl.backend import fused_native
    matmul = shared_matmul()
    generator = np.random.default_rng(0)
    a = generator.standard_normal((256, 384)).astype(np.float32)
    b = generator.standard_normal((384, 512)).astype(np.float32)
    expected_product = np.matmul(a, b)
    expected_relu = np.maximum(expected_product, 0)
    failures = []

    def work():
        for _ in range(30):
            product = matmul(a, b)
            relu = fused_native.activation_forward("relu", product)
            if not (np.array_equal(product, expected_product) and np.array_equal(relu, expected_relu)):
                failures.append("wrong result")

    workers = [threading.Thread(target=work, daemon=True) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert not any(worker.is_alive() for worker in workers), "deadlock: a thread is still inside a GEMM or kernel"
    assert failures == []


def test_the_bench_environment_records_which_threads_run_the_gemm():
    from gpudl.benchmark import environment
    gemm = environment()["gemm"]
    assert gemm["pool"] == blas.choice().pool and gemm["GPUDL_BLAS_THREADS"] is None


GRID_CHECK = """
import numpy as np
from gpudl.backend import blas
assert blas.choice().threads == 6, blas.describe()
generator = np.random.default_rng(1)
for m, k, n in [(600, 64, 600), (64, 300, 2000), (2000, 300, 64), (70, 70, 70)]:
    a = generator.standard_normal((m, k))
    b = generator.standard_normal((k, n))
    np.testing.assert_allclose(blas.matmul(a, b), a @ b, rtol=1e-13, atol=1e-12)
print("ok")
"""


@native
def test_six_threads_cut_products_into_grids_of_blocks():
    """A 2-D grid (2 x 3 blocks for a square result) needs more threads than CI's 2 cores give by default."""
    shared_matmul()
    environment = dict(os.environ, OMP_NUM_THREADS="6")
    environment.pop("GPUDL_BLAS_THREADS", None)
    done = subprocess.run([sys.executable, "-c", GRID_CHECK], env=environment, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


WAIT_POLICY_CHECK = """
import os
from gpudl.backend import cpu_kernels
cpu_kernels.configure_openmp()
print(os.environ.get("OMP_WAIT_POLICY"))
"""


@pytest.mark.parametrize("threads, user, expected", [
    ("shared", {}, "None"),                              # one pool: libgomp's default brief spin
    ("own", {}, "PASSIVE"),                              # two pools: our idle threads sleep
    ("own", {"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),    # the user's choice stands
    ("own", {"GOMP_SPINCOUNT": "1000"}, "None"),
])
def test_the_openmp_wait_policy_follows_the_number_of_pools(threads, user, expected):
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    environment.update(user, GPUDL_BLAS_THREADS=threads)
    done = subprocess.run([sys.executable, "-c", WAIT_POLICY_CHECK], env=environment, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
