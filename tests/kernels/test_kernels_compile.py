"""Every kernel x every launch signature in kernel_specs.SIGNATURES compiles with NVRTC to cubin.

Coverage: every signature (float16/32/64, scalar vs array, layout variants: the launches
tests/test_launches.py records) for each of sm_75, sm_80 and sm_90, with the CUDA toolchain of
the installed CuPy (CUDA 13 in .venv; scripts/check_kernels_cuda12.sh runs it with CUDA 12).
Runs without a GPU; skips only when CuPy or NVRTC cannot be loaded.
"""
import pytest

from gpudl.backend.kernel_specs import KERNELS, SIGNATURES

try:
    import nvrtc_check as nc
    from cupy.cuda import nvrtc
    nvrtc.getVersion()
except Exception as exc:  # ImportError, or NVRTC's shared library missing
    pytest.skip(f"CuPy/NVRTC not importable: {exc!r}", allow_module_level=True)

_kernels = {}


def kernel(name):
    if name not in _kernels:
        _kernels[name] = nc.build_kernel(KERNELS[name])
    return _kernels[name]


def _sig_id(sig):
    parts = [d[1] + "s" if isinstance(d, tuple) else d for d in sig.dtypes]
    return (f"{'-'.join(parts)}-nd{sig.ndim}"
            f"{'' if not sig.contiguous or all(sig.contiguous) else '-strided' + ''.join('ct'[c] for c in sig.contiguous)}"
            f"{'' if sig.idx32 else '-idx64'}")


ARCHS = ("75", "80", "90")
ALL = [pytest.param(name, sig, id=f"{name}[{_sig_id(sig)}]")
       for name in KERNELS for sig in SIGNATURES.get(name, ())]


def test_every_kernel_has_signatures():
    missing = [name for name in KERNELS if not SIGNATURES.get(name)]
    assert not missing, f"kernels with no launch signature listed: {missing}"
    assert set(SIGNATURES) <= set(KERNELS), set(SIGNATURES) - set(KERNELS)
    for name in KERNELS:
        dts = {d for s in SIGNATURES[name] for d in s.dtypes if isinstance(d, str)}
        if name != "check_class_indices":
            assert {"float16", "float32", "float64"} <= dts, name


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"sm{a}")
@pytest.mark.parametrize("name,sig", ALL)
def test_compiles(name, sig, arch):
    assert nc.check_kernel(kernel(name), sig, arch=arch)


# --- the checker catches broken kernels -----------------------------------------------------

def _broken(operation, in_params="T x", out_params="T y"):
    spec = dict(KERNELS["relu_forward"], operation=operation, in_params=in_params,
                out_params=out_params, name="gpudl_broken")
    return nc.build_kernel(spec)


@pytest.mark.parametrize("operation,dtype,message", [
    ("y = gpudl::reluu(x)", "float32", "reluu"),                        # undefined name
    ("y = x > 0 ? x : 0", "float16", "ambiguous"),                      # float16-only ternary bug
    ("int* p = &x; y = x", "float32", "cannot be used to initialize"),  # wrong type
    ("y = gpudl::relu(x, x)", "float64", "no instance"),                # wrong arity
])
def test_checker_catches_broken_kernel(operation, dtype, message):
    sig = SIGNATURES["relu_forward"][0]._replace(dtypes=(dtype, dtype))
    with pytest.raises(nc.KernelCompileError, match=message):
        nc.check_kernel(_broken(operation), sig)


def test_float16_ternary_compiles_for_float32():
    """The ternary above is a float16-only bug: the same code is fine in float32."""
    sig = SIGNATURES["relu_forward"][0]._replace(dtypes=("float32", "float32"))
    nc.check_kernel(_broken("y = x > 0 ? x : 0"), sig)


def test_infinity_macro_is_rejected():
    """NVRTC has no INFINITY; the headers must use CUDART_INF(_F)."""
    sig = SIGNATURES["relu_forward"][0]._replace(dtypes=("float32", "float32"))
    with pytest.raises(nc.KernelCompileError, match="INFINITY"):
        nc.check_kernel(_broken("y = INFINITY"), sig)


# --- drift guard: (A) sends what CuPy's own pipeline sends -----------------------------------

@pytest.mark.parametrize("name", ["gelu_forward", "softmax_cross_entropy_loss",
                                  "softmax_cross_entropy_sum_exp", "adam", "masked_softmax_forward"])
def test_source_and_options_match_cupy_pipeline(name):
    k = kernel(name)
    sig = next(s for s in SIGNATURES[name] if "float16" in s.dtypes)
    code = nc.kernel_source(k, sig)
    source, options = nc.compile_via_cupy_pipeline(code, nc.kernel_options(k), arch="90")
    assert source == nc.header_prefix() + code
    assert tuple(options) == nc.cupy_options(nc.kernel_options(k), "90")
