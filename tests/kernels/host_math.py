"""Run one kernel signature on the host: the product's own launch loop, driven by a test.

The shim, the ``float16`` class (CuPy's semantics), the compile cache and the C++ loop generated
from a spec all come from ``gpudl.backend`` (``host_compiler``, ``native_kernels``): these checks
run exactly the code the NumPy backend runs, one signature at a time, with an optional
replacement preamble (to show that a broken header is caught). Arrays are flat and C-contiguous.

Needs only NumPy and a C++ compiler with ``_Float16`` (GCC >= 12 on x86-64).
"""
import numpy as np

from gpudl.backend import host_compiler, native_kernels

CXX = host_compiler.compiler()
HostCompileError = host_compiler.HostCompileError


def _run(spec, args, dtypes, preamble, rows, cols, strides):
    entries = native_kernels.load_entries(spec, [tuple(dtypes)], preamble)
    values = []
    for value, dt in zip(args, dtypes):
        if not isinstance(dt, tuple):
            assert value.flags.c_contiguous and value.dtype == np.dtype(dt), (value.dtype, dt)
            value = value.__array_struct__
        values.append(value)
    next(iter(entries.values()))(*values, rows, cols, strides)


def run_elementwise(spec, args, dtypes, size, preamble=None):
    """Run an elementwise spec over ``size`` elements; ``args`` per in+out param (outs written),
    ``dtypes`` per param (``("scalar", dtype)`` for scalars)."""
    _run(spec, args, dtypes, preamble, 1, size, None)


def run_reduction(spec, args, dtypes, rows, cols, preamble=None):
    """Run a reduction spec: inputs are C-contiguous [rows, cols], outputs [rows]."""
    n_in = sum(p.is_input for p in native_kernels.parse_params(spec))
    strides = np.array([cols, 1] * n_in, np.int64)
    _run(spec, args, dtypes, preamble, rows, cols, strides.ctypes.data)


def have_float16():
    """Whether the host compiler supports ``_Float16`` (GCC >= 12 on x86-64)."""
    try:
        host_compiler.build("_Float16 probe(float x) { return (_Float16)x; }\n", ("-O0",),
                            name="float16_probe")
        return True
    except (HostCompileError, host_compiler.CompilerUnavailable):
        return False
