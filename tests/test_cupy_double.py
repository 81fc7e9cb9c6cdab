"""The CuPy test double (tests/cupy_double): array semantics, kernels and stand-ins as CuPy's,
the drift guard against the installed real CuPy, gpudl's training-step parity on the double and
planted GPU-path bugs that fail on the double but pass on the NumPy backend."""
import inspect
import json
import operator
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from tests import cupy_double
from tests.cupy_double import NoStandInError, NoStandInImportError

cp = cupy_double.build()
ROOT = Path(__file__).resolve().parents[1]
IMPLICIT = "Implicit conversion to a NumPy array is not allowed"


def _x():
    return cp.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))


def _run_module(module, *args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("GPUDL_CUPY_DOUBLE", None)
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


# ---------------------------------------------------------------- the device array
def test_implicit_conversion_to_numpy_is_refused():
    x = _x()
    for convert in (np.asarray, np.array, np.ascontiguousarray, lambda a: np.asarray([a[0, 0]])):
        with pytest.raises(TypeError, match=IMPLICIT):
            convert(x)
    with pytest.raises(TypeError):
        memoryview(x)
    with pytest.raises(TypeError):
        operator.index(x[0, 0].astype(np.int64))
    assert not isinstance(x, np.ndarray) and type(x) is cp.ndarray


def test_explicit_transfers_copy():
    host = np.ones(3, np.float32)
    x = cp.asarray(host)
    host[0] = 5
    assert x.get().tolist() == [1, 1, 1]
    assert cp.asnumpy(x).tolist() == [1, 1, 1] and isinstance(x.get(), np.ndarray)
    x.set(np.full(3, 2, np.float32))
    assert x.get().tolist() == [2, 2, 2] and cp.asarray(x) is x
    with pytest.raises(TypeError, match="float64 array cannot be set to float32 array"):
        x.set(np.ones(3))
    with pytest.raises(ValueError, match="Shape mismatch"):
        x.get(out=np.empty(4, np.float32))


def test_reductions_and_indexing_give_0d_device_arrays_that_convert():
    x = _x()
    total, element = x.sum(), x[1, 2]
    for value in (total, element, x.max(), np.sum(x)):
        assert type(value) is cp.ndarray and value.shape == ()
    assert float(total) == 66.0 and int(element) == 6 and bool(total > 0)
    assert f"{total:.1f}" == "66.0" and element.item() == 6.0
    element[...] = 100  # a 0-d view, as in CuPy
    assert x.get()[1, 2] == 100
    with pytest.raises(TypeError, match="not JSON serializable"):
        json.dumps({"loss": total})
    assert pickle.loads(pickle.dumps(x)).get().tolist() == x.get().tolist()


def test_numpy_calls_dispatch_as_in_cupy():
    x = _x()
    assert type(np.exp(x)) is cp.ndarray and type(np.mean(x, axis=0)) is cp.ndarray
    with pytest.raises(TypeError, match="no implementation found for 'numpy.einsum_path'"):
        np.einsum_path("ij->", x)
    with pytest.raises(NotImplementedError, match="`cupy_maximum.reduce` is not supported yet"):
        np.maximum.reduce(x, axis=1)
    assert np.add.reduce(x, axis=0).get().tolist() == [12, 15, 18, 21]


def test_ufuncs_refuse_host_arrays_and_lists():
    x = _x()
    for call in (lambda: x + np.ones(4), lambda: np.ones(4) + x, lambda: x * [1, 2, 3, 4],
                 lambda: cp.exp(np.ones(3)), lambda: cp.add(x, x, out=np.empty((3, 4)))):
        with pytest.raises(TypeError, match="Unsupported type"):
            call()
    with pytest.raises(TypeError, match="Wrong arguments"):
        cp.add(x, x, where=x > 0)
    assert (x + 1.0).dtype == np.float32 and (x * np.float64(2)).dtype == np.float64


def test_host_arrays_are_refused_by_cupy_functions_and_assignment():
    x = _x()
    with pytest.raises(TypeError, match="cupy.concatenate got a host numpy.ndarray"):
        cp.concatenate([x[0], np.ones(4, np.float32)])
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        x[0] = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="Unsupported type"):
        x[0] = [1, 2, 3, 4]
    x[0] = np.float32(7)
    x[1] = cp.zeros(4, np.float32)
    assert x.get()[:2].tolist() == [[7] * 4, [0] * 4]
    assert cp.zeros_like(np.ones(2)).shape == (2,) and cp.shape(np.ones((2, 3))) == (2, 3)


def test_namespace_and_signatures_follow_the_real_cupy():
    x = _x()
    with pytest.raises(AttributeError, match="module 'cupy' has no attribute 'errstate'"):
        cp.errstate
    with pytest.raises(TypeError, match=r"cupy.sum\(\): got an unexpected keyword argument "
                                        r"'where' \[signature in CuPy 14.2.0"):
        cp.sum(x, where=x > 0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'initial'"):
        x.sum(initial=0)
    with pytest.raises(TypeError, match="missing a required argument: 'axis'"):
        cp.take_along_axis(x, cp.zeros((3, 1), np.int64))
    with pytest.raises(TypeError, match="missing a required argument: 'a_max'"):
        cp.clip(x, 0)
    assert str(inspect.signature(cp.sum)) == "(a, axis=None, dtype=None, out=None, keepdims=False)"
    assert not hasattr(cp.random.default_rng(0), "normal")
    assert cp.random.default_rng(0).standard_normal(3, dtype=np.float32).dtype == np.float32
    assert cp.random.randn(2, 3, dtype=np.float32).dtype == np.float32
    assert cp.float32 is np.float32 and cp.__version__ == "14.2.0"


def test_names_without_a_stand_in_say_so():
    with pytest.raises(NoStandInError, match="cupy.RawModule exists in CuPy 14.2.0 but has no CPU"):
        cp.RawModule(code="")
    with pytest.raises(AttributeError, match="cupy.cuda.nvrtc exists in CuPy"):
        cp.cuda.nvrtc
    with pytest.raises(NoStandInImportError, match="cupy._core is a module of the real CuPy"):
        cupy_double._finder.find_spec("cupy._core", None)
    with pytest.raises(ModuleNotFoundError, match="No module named 'cupy.nothing'"):
        cupy_double._finder.find_spec("cupy.nothing", None)


def test_ufunc_methods_follow_cupy():
    a = cp.zeros(4)
    cp.add.at(a, cp.asarray([0, 0, 2]), 1.0)
    assert a.get().tolist() == [2, 0, 1, 0]
    with pytest.raises(NotImplementedError, match="`cupy_multiply.at` is not supported yet"):
        cp.multiply.at(a, [0], 2.0)
    assert cp.add._scatter_op == "add" and cp.multiply._scatter_op is None


def test_device_flags_and_views():
    x = _x()
    assert x.device.id == 0 and x.data.device_id == 0
    assert x.flags.c_contiguous and not x.T.flags.c_contiguous and x.T.strides == (4, 16)
    x.T[0, 1] = -1  # views write through
    assert x.get()[1, 0] == -1


# ---------------------------------------------------------------- kernels
def test_elementwise_kernel_broadcasts_allocates_and_runs_the_operation():
    add = cp.ElementwiseKernel("T x, T y, float64 s", "T z", "z = x + y * s", "test_add")
    x = _x()
    z = add(x, x[0], 2)
    assert z.dtype == np.float32 and z.get().tolist() == (x.get() + 2 * x.get()[0]).tolist()
    out = cp.empty((3, 4), np.float32)
    assert add(x, 1.0, 1, out) is out and out.get()[0, 0] == 1.0
    pair = cp.ElementwiseKernel("T x", "T y, T w", "y = x; w = -x", "test_pair")
    y, w = pair(x[:, 1:3])  # a strided view
    assert y.get().tolist() == x.get()[:, 1:3].tolist() and w.get()[0, 0] == -1


@pytest.mark.parametrize("call, error, message", [
    (lambda k, x: k(x, np.ones(4, np.float32)), TypeError, "Unsupported type <class 'numpy.ndarray'>"),
    (lambda k, x: k(x, x[:, 0]), ValueError,
     r"operands could not be broadcast together with shapes \(3,4\) \(3,\)"),
    (lambda k, x: k(x, x.astype(np.float64)), TypeError, "Type is mismatched. y float64 float32 T"),
    (lambda k, x: k(x), TypeError, "Wrong number of arguments for 'test_k'. It must be either 2 or 3"),
    (lambda k, x: k(x, x, stream=None, axis=0), TypeError, "Wrong arguments"),
    (lambda k, x: k(x, x, size=3), ValueError, "Specified 'size' can be used only if all"),
    (lambda k, x: k(x, x, cp.empty(4, np.float32)), ValueError, "Out shape is mismatched"),
    (lambda k, x: k(x, x, np.empty((3, 4), np.float32)), TypeError, "Unsupported type"),
    (lambda k, x: k(x, 1.5, cp.empty((3, 4), np.int32)), TypeError, "Type is mismatched"),
])
def test_elementwise_kernel_argument_errors_are_cupys(call, error, message):
    kernel = cp.ElementwiseKernel("T x, T y", "T z", "z = x + y", "test_k")
    with pytest.raises(error, match=message):
        call(kernel, _x())


def test_kernel_parameter_rules():
    with pytest.raises(ValueError, match="Can not use 'i' as a parameter name"):
        cp.ElementwiseKernel("T i", "T y", "y = i", "k")
    with pytest.raises(ValueError, match='Invalid kernel name: "k-1"'):
        cp.ElementwiseKernel("T x", "T y", "y = x", "k-1")
    as_double = cp.ElementwiseKernel("float x", "T y", "y = x", "test_float_is_double")
    with pytest.raises(TypeError, match="Type is mismatched. x float32 float64"):
        as_double(cp.ones(2, np.float32))  # 'float' means float64 in a kernel's parameter list
    narrow = cp.ElementwiseKernel("T x, int8 s", "T y", "y = x + s", "test_narrow")
    with pytest.raises(OverflowError, match="Python integer 300 out of bounds for int8"):
        narrow(cp.ones(2), 300)
    raw_out = cp.ElementwiseKernel("T x", "raw T y", "y[i] = x", "test_raw_out")
    with pytest.raises(ValueError, match="Output array size is Undecided"):
        raw_out(cp.ones(2))


def test_raw_parameters_index_by_i_and_are_bounds_checked():
    pick = cp.ElementwiseKernel("raw T x, int64 n", "T y", "y = x[i * n + 1]", "test_pick")
    x = _x()
    assert pick(x, 4, cp.empty(3, np.float32)).get().tolist() == [1, 5, 9]
    with pytest.raises(IndexError, match=r"raw parameter 'x' indexed at 13, outside \[0, 12\)"):
        pick(x, 6, cp.empty(3, np.float32))
    fill = cp.ElementwiseKernel("T v", "raw T y", "y[i] = v", "test_fill")
    y = cp.zeros(5)
    fill(2.0, y, size=3)
    assert y.get().tolist() == [2, 2, 2, 0, 0]


def test_reduction_kernel():
    sum_exp = cp.ReductionKernel("T x, T m", "A s", "exp(A(x) - A(m))", "a + b", "s = a", "0",
                                 "test_sum_exp", reduce_type="A")
    x = _x()
    m = x.max(axis=1)
    out = cp.empty(3, np.float64)
    assert sum_exp(x, m[:, None], axis=1, out=out) is out
    host = x.get().astype(np.float64)
    np.testing.assert_allclose(out.get(), np.exp(host - host.max(1)[:, None]).sum(1), rtol=1e-12)
    total = cp.ReductionKernel("T x", "T y", "x * x", "a + b", "y = a", "0", "test_sq")
    assert total(x, axis=0, keepdims=True).shape == (1, 4) and float(total(x)) == 506.0
    no_identity = cp.ReductionKernel("T x", "T y", "x", "max(a, b)", "y = a", None, "test_max")
    with pytest.raises(ValueError, match="zero-size array to reduction operation test_max"):
        no_identity(cp.ones((0, 2)), axis=0)
    reads_input = cp.ReductionKernel("T x", "T y", "x", "a + b", "y = a + x", "0", "test_scope")
    with pytest.raises(cupy_double._kernels._host_cxx.HostCompileError, match=".x. was not declared in this scope"):
        reads_input(x)  # inputs exist only in the map loop, as in CuPy's template


def test_float16_kernels_compute_in_float_and_round_once():
    kernel = cp.ElementwiseKernel("T x", "T y", "y = x * T(3) / T(7)", "test_half")
    x = np.linspace(-4, 4, 101).astype(np.float16)
    y = kernel(cp.asarray(x))
    expected = (x.astype(np.float32) * 3 / 7).astype(np.float16)
    assert y.dtype == np.float16 and y.get().tolist() == expected.tolist()


# ---------------------------------------------------------------- cupy.cuda stand-ins
def test_devices_and_runtime():
    assert cp.cuda.is_available() and cp.cuda.runtime.getDeviceCount() == 1
    with cp.cuda.Device(0) as device:
        assert device.id == 0 and cp.cuda.Device().id == 0
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="invalid device ordinal"):
        cp.cuda.Device(1).use()
    props = cp.cuda.runtime.getDeviceProperties(0)
    assert props["name"].startswith(b"cupy_double") and props["major"] == 9


def test_memory_pool_counts_buffers_and_a_limit_simulates_out_of_memory():
    pool = cp.get_default_memory_pool()
    before = pool.used_bytes()
    x = cp.zeros(1000, np.float32)
    assert pool.used_bytes() - before == 4096  # 4000 bytes rounded up to 512
    del x
    assert pool.used_bytes() == before and pool.total_bytes() >= before + 4096
    pool.set_limit(size=pool.used_bytes() + 1024)
    try:
        with pytest.raises(cp.cuda.memory.OutOfMemoryError, match="Out of memory allocating 4,096"):
            cp.ones(1000, np.float32)
    finally:
        pool.set_limit(size=0)
    pool.free_all_blocks()
    assert pool.free_bytes() == 0


def test_streams_events_and_graph_capture():
    stream = cp.cuda.Stream()
    with stream:
        assert cp.cuda.get_current_stream() is stream
        start = stream.record()
        end = stream.record()
    assert cp.cuda.get_current_stream() is cp.cuda.Stream.null
    assert cp.cuda.get_elapsed_time(start, end) >= 0
    with pytest.raises(NoStandInError, match="CUDA graph capture is not emulated"):
        stream.begin_capture()


# ---------------------------------------------------------------- drift guard (real CuPy)
@pytest.fixture(scope="module")
def drift():
    try:
        return _run_module("tests.cupy_double.drift_guard")
    except AssertionError as exc:
        if "No module named 'cupy'" in str(exc):
            pytest.skip("the real CuPy is not installed (pip install 'cupy-cuda13x==14.2.*')")
        raise


def test_kernel_type_resolution_matches_real_cupy(drift):
    assert drift["cases"] > 50000 and drift["differences"] == []


def test_manifest_matches_the_installed_cupy(drift):
    assert drift["manifest_equal"], manifest_mismatch_message(drift)


def manifest_mismatch_message(drift):
    """What to tell when manifest.json differs from the installed CuPy: a new CuPy version, or the
    same version exposing something else (then another package changed the environment)."""
    where = "\n  ".join(drift["manifest_differences"])
    if drift["cupy_version"] != drift["manifest_version"]:
        return (f"CuPy changed: manifest.json describes CuPy {drift['manifest_version']}, the installed CuPy is "
                f"{drift['cupy_version']}; regenerate with python -m tests.cupy_double.make_manifest. "
                f"First differences:\n  {where}")
    return (f"the installed CuPy {drift['cupy_version']} is the version manifest.json describes but exposes "
            f"something else (another package changed what CuPy finds, e.g. CUDA libraries); do not "
            f"regenerate the manifest for this. Differences (manifest.json -> installed):\n  {where}")


def test_manifest_entries_name_what_cupy_exposes_not_where_it_loads_from():
    from tests.cupy_double import make_manifest
    loaded_elsewhere = types.ModuleType("cupy_backends.cuda.libs.cublas")
    assert make_manifest.describe(loaded_elsewhere, "cupy.cuda", "cublas") == \
        make_manifest.module_entry("cupy.cuda.cublas", "cupy.cuda", "cublas") == \
        {"kind": "module", "module": "cupy.cuda.cublas"}
    assert make_manifest.describe(types.ModuleType("threading"), "cupy.cuda", "threading") == \
        {"kind": "module", "module": "threading"}


def test_a_manifest_mismatch_names_its_cause():
    from tests.cupy_double import make_manifest
    committed = {"cupy_version": "14.2.0", "modules": {"cupy.cuda": {"cublas": {"kind": "module"}}},
                 "real_modules": ["cupy", "cupy.cuda"]}
    fresh = {"cupy_version": "14.2.0", "modules": {"cupy.cuda": {"cublas": {"kind": "function"}}},
             "real_modules": ["cupy", "cupy.cuda", "cupy.extra"]}
    found = make_manifest.differences(fresh, committed)
    assert found == ['modules.cupy.cuda.cublas.kind: "module" -> "function"',
                     "real_modules: cupy.extra only installed"]
    same = manifest_mismatch_message({"cupy_version": "14.2.0", "manifest_version": "14.2.0",
                                      "manifest_differences": found})
    assert "is the version manifest.json describes" in same and "cupy.cuda.cublas" in same
    assert "CuPy changed" not in same
    newer = manifest_mismatch_message({"cupy_version": "14.3.0", "manifest_version": "14.2.0",
                                       "manifest_differences": found})
    assert newer.startswith("CuPy changed: manifest.json describes CuPy 14.2.0, the installed CuPy is 14.3.0")


# ---------------------------------------------------------------- gpudl on the double
@pytest.fixture(scope="module")
def scenarios():
    return _run_module("tests.cupy_double.scenarios")


def _assert_parity(result, rtol, atol):
    cpu, cuda = result["cpu"], result["cuda"]
    assert "ok" in cpu and "ok" in cuda, (cpu, cuda)
    np.testing.assert_allclose(cuda["ok"]["losses"], cpu["ok"]["losses"], rtol=rtol, atol=atol)
    for a, b in zip(cuda["ok"]["params"], cpu["ok"]["params"]):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name, rtol, atol", [("parity_mlp_float32", 1e-5, 1e-6),
                                              ("parity_mlp_float64", 1e-12, 1e-14),
                                              ("parity_cnn", 1e-5, 1e-6)])
def test_training_steps_match_the_numpy_backend(scenarios, name, rtol, atol):
    _assert_parity(scenarios[name], rtol, atol)


@pytest.mark.parametrize("name, error, message", [
    ("bug_host_gradient_into_kernel", "TypeError", "Unsupported type <class 'numpy.ndarray'>"),
    ("bug_np_asarray_on_device_array", "TypeError", IMPLICIT),
    ("bug_function_cupy_lacks", "AttributeError", "module 'cupy' has no attribute 'errstate'"),
    ("bug_keyword_cupy_lacks", "TypeError", "cupy.sum(): got an unexpected keyword argument 'where'"),
    ("bug_json_dump_of_0d_device_value", "TypeError", "Object of type ndarray is not JSON serializable"),
    ("bug_kernel_broadcasting", "ValueError", "operands could not be broadcast together with shapes "
                                              "(8,4) (8,1) (8,) (8,1)"),
    ("bug_raw_index_out_of_bounds", "IndexError", "raw parameter 'logits' indexed at 35, outside [0, 32)"),
])
def test_planted_gpu_path_bug_fails_on_the_double_and_passes_on_numpy(scenarios, name, error, message):
    result = scenarios[name]
    assert "ok" in result["cpu"], result["cpu"]
    assert "error" in result["cuda"], f"the double missed the planted bug {name}"
    assert result["cuda"]["error"][0] == error and message in result["cuda"]["error"][1], result["cuda"]
