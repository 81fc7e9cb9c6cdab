"""Every CuPy name, keyword, Generator method and array method gpudl uses exists in the pinned CuPy:
``cupy.*`` in the backend and ``xp.*`` / array-method calls anywhere in gpudl/."""
from pathlib import Path

import pytest

pytest.importorskip("cupy", reason="CuPy not importable")

import cupy_api_check  # noqa: E402

GPUDL = Path(__file__).resolve().parents[2] / "gpudl"
SOURCES = sorted(GPUDL.rglob("*.py"))

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

BAD_XP_MODULE = '''
class Function:
    pass
class Op(Function):
    def forward(self, x, w):
        xp = self.xp
        y = xp.matmul(x, w)
        y.itemset(0, 1.0)                       # NumPy-only method
        z = y.astype(x.dtype, copy=False)
        z.sum(axis=0, where=None)               # CuPy's sum has no where=
        xp.take_along_axis(z, x)
        self.xp.clip(z, min=0)                  # no min= in CuPy's clip
        return self.backend.xp.errstate, xp.multiply.at
    def backward(self, grad):
        g = grad.reshape(-1)
        host = g.get()
        host.tofile("x")                        # a host array: not checked
        return NUMPY.xp.__config__, g.ptp()
def helper(t, items):
    t.data.argmax(keepdim=True)                 # keepdims= in CuPy
    items.sort(key=len)                         # not an array: not checked
    t.sum(dim=1)                                # a Tensor, not its data: not checked
'''


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(GPUDL)))
def test_gpudl_uses_only_existing_cupy_api(path):
    assert cupy_api_check.scan_file(path) == []


def test_scan_covers_xp_across_gpudl():
    """The scan sees the xp.* uses outside the backend (ops, nn, optim)."""
    scanner_names = set()
    for path in SOURCES:
        text = path.read_text()
        if "xp." in text:
            scanner_names.add(path.parent.name)
    assert {"ops", "nn", "optim"} <= scanner_names
    problems = cupy_api_check.scan_source("def f(x):\n    return x.xp.add.att(x)\n")
    assert problems == ["cupy.add.att: does not exist in cupy"]


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


def test_scanner_flags_bad_xp_and_array_methods():
    problems = cupy_api_check.scan_source(BAD_XP_MODULE)
    assert problems == [
        "cupy.clip: no keyword 'min'",
        "cupy.errstate: does not exist in cupy",
        "cupy.multiply.at: exists but raises NotImplementedError (no scatter kernel)",
        "cupy.ndarray.argmax: no keyword 'keepdim'",
        "cupy.ndarray.itemset: does not exist in cupy",
        "cupy.ndarray.sum: no keyword 'where'",
    ], problems


def test_methods_used_on_cupy_objects_exist():
    """Methods a static scan cannot see, used by fused_cupy."""
    import cupy
    for name in ("get", "astype", "max"):
        assert hasattr(cupy.ndarray, name)
    assert hasattr(cupy.ReductionKernel, "__call__")
