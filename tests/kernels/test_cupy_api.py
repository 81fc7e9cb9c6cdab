"""Every CuPy name, keyword and Generator method used in gpudl/backend exists in the installed CuPy."""
from pathlib import Path

import pytest

pytest.importorskip("cupy", reason="CuPy not importable")

import cupy_api_check  # noqa: E402

BACKEND = Path(__file__).resolve().parents[2] / "gpudl" / "backend"

BAD_MODULE = '''
import cupy as cp
import cupyx
from cupy.lib import stride_tricks
def f(x):
    with cp.errstate(all="ignore"):
        pass
    cp.multiply.at(x, [0], 2)
    cp.add.at(x, [0], 1)
    stride_tricks.sliding_window_veiw(x, 2)
    cupyx.scatter_mul(x, [0], 1)
    cp.lib.stride_tricks.as_strided(x, (1,), (1,), writeable=False)
    rng = cp.random.default_rng(0)
    rng.permutation(3)
    rng.standard_normal(3)
    return cp.ElementwiseKernel("T x", "T y", "y = x", "k")
'''


@pytest.mark.parametrize("path", sorted(BACKEND.glob("*.py")), ids=lambda p: p.name)
def test_backend_uses_only_existing_cupy_api(path):
    assert cupy_api_check.scan_file(path) == []


def test_scanner_flags_bad_module():
    problems = cupy_api_check.scan_source(BAD_MODULE)
    assert problems == [
        "cupy.errstate: does not exist in cupy",
        "cupy.lib.stride_tricks.as_strided: no keyword 'writeable'",
        "cupy.lib.stride_tricks.sliding_window_veiw: does not exist in cupy",
        "cupy.multiply.at: exists but raises NotImplementedError (no scatter kernel)",
        "cupy.random.Generator.permutation: does not exist",
        "cupyx.scatter_mul: does not exist in cupy",
    ], problems


def test_methods_used_on_cupy_objects_exist():
    """Methods a static scan cannot see, used by fused_cupy."""
    import cupy
    for name in ("get", "astype", "max"):
        assert hasattr(cupy.ndarray, name)
    assert hasattr(cupy.ReductionKernel, "__call__")
