"""Compile gpudl's CuPy kernels with NVRTC, without a GPU or a CUDA driver.

Approach (A) of /work/shared/reference/gpu-checks.md: CuPy's own code generator
(``_kernel._get_elementwise_kernel_code`` / ``_reduction._ReductionKernel_get_cached_function_code``)
builds the exact CUDA source CuPy would build for a launch signature; CuPy's own option assembly
(``core.assemble_cupy_compiler_options`` plus what ``compiler._compile_with_cache_cuda`` adds)
gives the exact options; ``cupy.cuda.nvrtc`` compiles to cubin (so ptxas errors show too).

Approach (B), the drift guard: :func:`compile_via_cupy_pipeline` runs CuPy's real
``compile_with_cache`` with the device lookup patched and captures what reaches NVRTC, so a test
can assert that (A) sends the same source and options.

These touch CuPy internals (checked for CuPy 14.x); a rename fails loudly (AttributeError or
TypeError), never as a silent pass.
"""
import os
from unittest import mock

import numpy as np

import cupy
from cupy._core import _carray, _kernel, _reduction, _scalar, core
from cupy.cuda import compiler, nvrtc

_NDARRAY, _INDEXER, _SCALAR = 1, 2, 3  # cupy/_core/_kernel.pxd::_ArgKind
REDUCTION_BLOCK_SIZE = 512             # CuPy's default _block_size for ReductionKernel


class KernelCompileError(Exception):
    """NVRTC rejected a kernel; the message holds NVRTC's log."""

    def __init__(self, log, source, options):
        super().__init__(log)
        self.log, self.source, self.options = log, source, options


def cupy_options(user_options=(), arch="80", cubin=True):
    """The NVRTC options CuPy passes for a kernel with ``user_options`` on ``sm_<arch>``."""
    options = core.assemble_cupy_compiler_options(tuple(user_options))
    return options + ("-ftz=true", f"-arch={'sm' if cubin else 'compute'}_{arch}",
                      "--device-as-default-execution-space")


def header_prefix():
    """The ``#include`` lines CuPy's ``compile_with_cache`` puts before every kernel."""
    return "".join(f"#include <{h}>\n" for h in core._cupy_header_list)


def nvrtc_compile(source, options, cubin=True):
    """Compile with NVRTC; return cubin (or PTX) bytes or raise :class:`KernelCompileError`."""
    prog = nvrtc.createProgram(source, "kern.cu", (), ())
    try:
        try:
            nvrtc.compileProgram(prog, tuple(options))
        except nvrtc.NVRTCError:
            raise KernelCompileError(nvrtc.getProgramLog(prog), source, options) from None
        return nvrtc.getCUBIN(prog) if cubin else nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)


def build_kernel(spec):
    """A ``cupy.ElementwiseKernel``/``ReductionKernel`` built from a kernel spec (lazy, no GPU)."""
    spec = dict(spec)
    kind = spec.pop("kind", "elementwise")
    if kind == "reduction":
        return cupy.ReductionKernel(
            spec["in_params"], spec["out_params"], spec["map_expr"], spec["reduce_expr"],
            spec["post_map_expr"], spec["identity"], spec["name"],
            reduce_type=spec.get("reduce_type"), preamble=spec.get("preamble", ""),
            options=tuple(spec.get("options", ())))
    return cupy.ElementwiseKernel(**spec)


def _arginfos(params, signature, ndim, idx32):
    contiguous = signature.contiguous or (True,) * len(signature.dtypes)
    raw_ndim = dict(signature.raw_ndim)
    infos = []
    for p, dt, contig in zip(params, signature.dtypes, contiguous):
        if isinstance(dt, tuple):
            infos.append(_kernel._ArgInfo(_SCALAR, _scalar.CScalar, np.dtype(dt[1]), 0, True,
                                          True))
        else:
            nd = raw_ndim.get(p.name, ndim if not isinstance(ndim, dict) else ndim[p.name])
            infos.append(_kernel._ArgInfo(_NDARRAY, cupy.ndarray, np.dtype(dt), nd, contig,
                                          idx32))
    return infos


def _split_dtypes(signature, nin):
    arr = tuple(None if isinstance(d, tuple) else np.dtype(d) for d in signature.dtypes)
    return arr[:nin], arr[nin:]


def elementwise_source(kernel, signature):
    """The CUDA source CuPy generates for ElementwiseKernel ``kernel`` launched as ``signature``."""
    in_dtypes, out_dtypes = _split_dtypes(signature, kernel.nin)
    _, _, type_map = kernel._decide_params_type(in_dtypes, out_dtypes)
    infos = _arginfos(kernel.in_params + kernel.out_params, signature, signature.ndim,
                      signature.idx32)
    infos.append(_kernel._ArgInfo(_INDEXER, _carray.Indexer, None, signature.ndim, True,
                                  signature.idx32))
    return _kernel._get_elementwise_kernel_code(
        tuple(infos), type_map, kernel.params, kernel.operation, kernel.name, kernel.preamble,
        **kernel.kwargs)


def reduction_source(kernel, signature):
    """The CUDA source CuPy generates for ReductionKernel ``kernel`` (the simple, non-CUB path)."""
    in_dtypes, out_dtypes = _split_dtypes(signature, kernel.nin)
    in_params, out_params = kernel.in_params, kernel.out_params
    _, _, type_map = _kernel._decide_params_type(in_params, out_params, in_dtypes, out_dtypes)
    index_type = "int32" if signature.idx32 else "int64"
    type_map = _kernel._TypeMap(type_map._pairs + (("IndexT", np.dtype(index_type)),))
    in_nd, out_nd = signature.ndim, signature.reduce_out_ndim
    ndims = {p.name: in_nd for p in in_params}
    ndims.update({p.name: out_nd for p in out_params})
    infos = _arginfos(in_params + out_params, signature, ndims, signature.idx32)
    infos += [_kernel._ArgInfo(_INDEXER, _carray.CIndexer, None, in_nd, True, signature.idx32),
              _kernel._ArgInfo(_INDEXER, _carray.CIndexer, None, out_nd, True, signature.idx32),
              _kernel._ArgInfo(_SCALAR, _scalar.CScalar, np.dtype("int32"), 0, True, True)]
    reduce_type = kernel.reduce_type
    return _reduction._ReductionKernel_get_cached_function_code(
        kernel.nin, kernel.nout, kernel._params, tuple(infos), type_map, kernel.name,
        REDUCTION_BLOCK_SIZE, reduce_type, kernel.identity, kernel.map_expr, kernel.reduce_expr,
        kernel.post_map_expr, kernel.preamble, kernel.options)


def kernel_source(kernel, signature):
    """Generated source (without CuPy's header prefix) for either kernel kind."""
    if isinstance(kernel, cupy.ReductionKernel):
        return reduction_source(kernel, signature)
    return elementwise_source(kernel, signature)


def kernel_options(kernel):
    if isinstance(kernel, cupy.ReductionKernel):
        return tuple(kernel.options or ())
    return tuple(kernel.kwargs.get("options", ()))


def check_kernel(kernel, signature, arch="80", cubin=True):
    """Compile ``kernel`` for ``signature`` exactly as CuPy would; return the cubin bytes."""
    source = header_prefix() + kernel_source(kernel, signature)
    return nvrtc_compile(source, cupy_options(kernel_options(kernel), arch, cubin), cubin)


class _Captured(Exception):
    pass


def compile_via_cupy_pipeline(code, options=(), arch="90"):
    """Run CuPy's real ``compile_with_cache`` and return ``(source, options)`` that reached NVRTC.

    The per-device arch lookup is patched (there is no device), and NVRTC's compile is wrapped
    to stop right after a successful compile, before the module load that needs a driver.
    """
    original = compiler._NVRTCProgram.compile

    def spy(self, options=(), log_stream=None):
        result = original(self, options, log_stream)
        if self.src:
            raise _Captured(self.src, tuple(options))
        return result

    with mock.patch.dict(os.environ, {"CUPY_CACHE_IN_MEMORY": "1"}), \
            mock.patch.object(compiler, "_get_arch_for_options_for_nvrtc",
                              lambda arch=None: (f"-arch=sm_{arch}", "cubin")), \
            mock.patch.object(compiler._NVRTCProgram, "compile", spy):
        try:
            core.compile_with_cache(code, tuple(options), arch=arch)
        except _Captured as captured:
            return captured.args
    raise AssertionError("CuPy's pipeline did not reach NVRTC")
