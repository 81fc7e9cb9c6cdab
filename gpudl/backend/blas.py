"""The GEMM provider of the NumPy backend: NumPy's own BLAS, or Intel MKL from the ``gpudl[mkl]`` extra.

``GPUDL_BLAS=auto`` (the default) takes MKL only when a short measurement at the models' GEMM shapes says it
is faster on this CPU (on Intel Xeons it usually is, on AMD EPYCs OpenBLAS usually wins); the verdict is
cached as JSON next to the compiled CPU kernels, keyed by the CPU, NumPy, MKL and the thread count.
``GPUDL_BLAS=numpy|mkl`` forces a provider. MKL is put on the GNU OpenMP threading layer (libgomp, the
runtime of the native CPU kernels), so one OpenMP runtime serves the process. NumPy's OpenBLAS is run on
that same pool too (``openblas_pool``: OpenBLAS set to one thread, one block of each product per OpenMP
thread) while the compiled CPU kernels are in use, unless ``GPUDL_BLAS_THREADS=own``.

``matmul(a, b, out=None)`` is the chosen function: ``numpy.matmul`` itself when NumPy's BLAS keeps its
own threads, so that path costs nothing extra per call.
"""
import ctypes
import functools
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from importlib import metadata

import numpy

from . import host_compiler, openblas_pool
from .selection import BackendError, environment_choice

CHOICES = ("auto", "numpy", "mkl")
THREAD_CHOICES = ("shared", "own")
INSTALL_HINT = "pip install gpudl[mkl]"
# (m, k, n) of the MLP's and CNN's forward GEMMs at batch 32/128 (784-512-512 layers)
MEASURE_SHAPES = ((128, 784, 512), (32, 512, 512), (512, 512, 512))
MEASURE_SECONDS = 0.05  # per shape and provider
MKL_WINS_BY = 1.05  # MKL must be this much faster to be chosen: noise must not flip the choice

_ROW_MAJOR = 101
_GNU_THREADING = 1  # MKL_THREADING_GNU in mkl_service.h


class BlasError(BackendError):
    """GPUDL_BLAS names an unknown provider, or one that is not installed."""


@dataclass(frozen=True)
class Choice:
    """The provider in use and why: ``name`` is ``numpy`` or ``mkl``; ``pool`` says which threads run it."""
    name: str
    reason: str
    threads: int = 0
    pool: str = ""


def requested_threads() -> str:
    """``GPUDL_BLAS_THREADS`` (default ``shared``): ``shared`` runs NumPy's OpenBLAS on gpudl's OpenMP threads
    (``openblas_pool``), ``own`` leaves it on its own threads; raises BlasError for any other value."""
    return environment_choice("GPUDL_BLAS_THREADS", "shared", THREAD_CHOICES, BlasError)


def requested() -> str:
    """``GPUDL_BLAS`` (default ``auto``); raises BlasError for any other value than auto|numpy|mkl."""
    return environment_choice("GPUDL_BLAS", "auto", CHOICES, BlasError)


def thread_count() -> int:
    """The threads MKL gets: ``OMP_NUM_THREADS`` when set (``gpudl bench --threads`` sets it), else the usable CPUs."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def mkl_library():
    """Path of ``libmkl_rt`` from the installed ``mkl`` wheel, or None when the extra is not installed."""
    try:
        dist = metadata.distribution("mkl")
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name.startswith("libmkl_rt.so") or file.name in ("mkl_rt.2.dll", "libmkl_rt.2.dylib"):
            return str(dist.locate_file(file))
    return None


def _mkl_version():
    """The installed ``mkl`` wheel's version (None if its metadata is gone)."""
    try:
        return metadata.version("mkl")
    except metadata.PackageNotFoundError:
        return None


class Mkl:
    """``cblas_sgemm``/``cblas_dgemm`` of one loaded libmkl_rt, on the GNU threading layer."""

    def __init__(self, path, threads):
        os.environ.setdefault("MKL_THREADING_LAYER", "GNU")  # read if MKL initialises before the call below
        self.lib = ctypes.CDLL(path)
        self.lib.MKL_Set_Threading_Layer(ctypes.c_int(_GNU_THREADING))
        self.lib.MKL_Set_Num_Threads(ctypes.c_int(threads))
        pointer, integer = ctypes.c_void_p, ctypes.c_int
        self.kernels = {}
        for dtype, name, scalar in ((numpy.float32, "cblas_sgemm", ctypes.c_float),
                                    (numpy.float64, "cblas_dgemm", ctypes.c_double)):
            function = getattr(self.lib, name)
            function.restype = None
            function.argtypes = [integer] * 6 + [scalar, pointer, integer, pointer, integer, scalar, pointer, integer]
            self.kernels[numpy.dtype(dtype)] = function

    def matmul(self, a, b, out=None):
        """``numpy.matmul(a, b, out=out)`` through MKL (see :func:`cblas_matmul`)."""
        return cblas_matmul(self.multiply, self.kernels, a, b, out)

    def multiply(self, a, b, c):
        """``c[...] = a @ b`` for 2-D or 3-D (same batch) operands of ``c``'s dtype, ``c`` C-contiguous."""
        kernel = self.kernels[c.dtype]
        for index in range(a.shape[0]) if a.ndim == 3 else (None,):
            ai, bi, ci = (a, b, c) if index is None else (a[index], b[index], c[index])
            ai, trans_a, lda, _ = openblas_pool.cblas_operand(ai)
            bi, trans_b, ldb, _ = openblas_pool.cblas_operand(bi)
            kernel(_ROW_MAJOR, trans_a, trans_b, ai.shape[0], ci.shape[1], ai.shape[1], 1.0, ai.ctypes.data, lda,
                   bi.ctypes.data, ldb, 0.0, ci.ctypes.data, ci.shape[1])


def cblas_matmul(multiply, dtypes, a, b, out=None, batch_dims=1):
    """``numpy.matmul(a, b, out=out)`` for float32/float64 operands of 2 or more dimensions through
    ``multiply(a, b, c)`` (a CBLAS provider writing a C-contiguous ``c`` that takes up to
    ``batch_dims`` batch dimensions; more are flattened into one batch first); anything else (other
    dtypes, broadcasting, an ``out`` of another shape or overlapping an operand) goes to NumPy, which
    also raises its errors."""
    shape = a.shape[:-1] + b.shape[-1:]
    if (a.dtype not in dtypes or b.dtype != a.dtype or a.ndim != b.ndim or a.ndim < 2
            or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]
            or out is not None and (out.shape != shape or numpy.may_share_memory(out, a)
                                    or numpy.may_share_memory(out, b))):
        return numpy.matmul(a, b, out=out)
    target = out if out is not None and out.dtype == a.dtype and out.flags.c_contiguous else None
    result = numpy.empty(shape, a.dtype) if target is None else target
    if a.shape[-1] == 0:
        result[...] = 0
    elif result.size and a.ndim > 2 + batch_dims:
        multiply(a.reshape((-1,) + a.shape[-2:]), b.reshape((-1,) + b.shape[-2:]),
                 result.reshape((-1,) + shape[-2:]))
    elif result.size:
        multiply(a, b, result)
    if out is not None and target is None:
        out[...] = result
        return out
    return result


def _first_matmul(a, b, out=None):
    """``matmul`` before the provider is chosen: choose it (rebinding ``matmul``), then multiply."""
    choose()
    return matmul(a, b, out=out)


_choice = None
matmul = _first_matmul  # gemm() calls the provider through this name; choose() rebinds it


def choice() -> Choice:
    """The provider in use (measured, forced or read from the cache on first call)."""
    if _choice is None:
        choose()
    return _choice


def choose():
    """Decide the provider and bind ``matmul`` to it (raises BlasError for a bad or unsatisfiable GPUDL_BLAS)."""
    global _choice, matmul, _serial_gemm
    wanted = requested()
    if _pooled is not None:
        _pooled.own_threads()  # OpenBLAS's own thread count until the choice below shares it
    threads = thread_count()
    path = mkl_library()
    mkl = None
    if wanted == "mkl" and path is None:
        raise BlasError(f"GPUDL_BLAS=mkl but Intel MKL is not installed: {INSTALL_HINT}")
    if wanted == "numpy":
        decided = Choice("numpy", "forced by GPUDL_BLAS=numpy")
    elif path is None:
        decided = Choice("numpy", f"mkl extra not installed; {INSTALL_HINT} to measure MKL")
    elif wanted == "mkl":
        decided = Choice("mkl", "forced by GPUDL_BLAS=mkl", threads)
    else:
        try:
            decided, mkl = _measured_choice(path, threads)
        except OSError as exc:  # e.g. no libgomp for MKL's GNU threading layer
            decided = Choice("numpy", f"MKL installed but not loadable: {exc}")
    if decided.name == "mkl":
        requested_threads()
        mkl = mkl or Mkl(path, threads)
        matmul = mkl.matmul
        if _pooled is not None:
            _pooled.own_threads()  # NumPy's BLAS, unused by gpudl now, keeps its threads for the user
        # called from inside an OpenMP parallel region, MKL runs on the calling thread alone
        _serial_gemm = {dtype: SerialGemm(_address(f), False, 0) for dtype, f in mkl.kernels.items()}
        decided = replace(decided, pool="shared: MKL runs on libgomp, the CPU kernels' OpenMP runtime")
    else:
        matmul, pool, pool_threads = _numpy_gemm()
        decided = replace(decided, pool=pool, threads=pool_threads)
        _serial_gemm = {}
        if pool_threads:
            _serial_gemm = {dtype: SerialGemm(address, _pooled.openblas.ilp64, _pooled.small_matrix_mnk)
                            for dtype, (_, address) in _pooled.entries.items()}
    _choice = decided
    return _choice


_pooled = None  # the PooledGemm, built once per process
_serial_gemm = {}  # dtype: SerialGemm


@dataclass(frozen=True)
class SerialGemm:
    """A ``cblas_?gemm`` that runs on its calling thread alone when called from gpudl's OpenMP
    threads: its ``address``, whether its integers are 64-bit (``ilp64``), and the multiply-adds up
    to which it takes an unpacked small-matrix path (``small_matrix_mnk``, 0: none)."""
    address: int
    ilp64: bool
    small_matrix_mnk: int


def single_thread_gemm(dtype):
    """The provider's :class:`SerialGemm` for ``dtype``, so that native loops can issue their own
    products (``native_recurrence``); None when the provider keeps threads of its own
    (``GPUDL_BLAS_THREADS=own``, or no compiled CPU kernels) or has no such function."""
    choice()
    return _serial_gemm.get(numpy.dtype(dtype))


def _address(function):
    return ctypes.cast(function, ctypes.c_void_p).value


def _numpy_gemm():
    """``(matmul, pool description, threads)`` for NumPy's BLAS: OpenBLAS on gpudl's OpenMP threads when
    ``GPUDL_BLAS_THREADS=shared`` and the compiled CPU kernels (and so an OpenMP pool) are in use, else
    ``numpy.matmul`` on OpenBLAS's own threads (their count restored if an earlier choice set it to 1)."""
    global _pooled
    from . import cpu_kernels
    if requested_threads() == "own":
        why = "GPUDL_BLAS_THREADS=own"
    elif cpu_kernels.status().path != "native":
        why = "no OpenMP pool to share: the CPU kernels are the NumPy twins"
    else:
        try:
            if _pooled is None:
                path = openblas_pool.numpy_openblas_path()
                if path is None:
                    raise OSError("NumPy's BLAS is not an OpenBLAS loaded from a file")
                _pooled = openblas_pool.PooledGemm(openblas_pool.OpenBlas(path))
            _pooled.share_threads()
            return (functools.partial(cblas_matmul, _pooled.multiply, _pooled.entries,
                                      batch_dims=_pooled.batch_dims),
                    f"shared: NumPy's OpenBLAS on one thread per block, gpudl's {_pooled.threads} OpenMP "
                    f"threads ({_pooled.openblas.path}; {_pooled.openblas.core} kernels, "
                    f"{'blocks sliced for its small-matrix kernels' if _pooled.small_matrix_mnk else 'blocks whole'})",
                    _pooled.threads)
        except (OSError, AttributeError, host_compiler.CompilerUnavailable,
                host_compiler.HostCompileError) as exc:
            why = f"OpenBLAS cannot be shared: {str(exc).splitlines()[0]}"
    if _pooled is not None:
        _pooled.own_threads()
    return numpy.matmul, f"own: NumPy's BLAS on its own threads ({why})", 0


def _measured_choice(path, threads):
    """``(choice, loaded Mkl or None)``: the cached verdict for this CPU/NumPy/MKL/threads, else a fresh
    measurement, then cached (MKL is loaded only to measure or to use it)."""
    numpy_matmul, pool, _ = _numpy_gemm()  # NumPy's BLAS as gpudl would run it, on its threads or its own
    threads_used = pool.split(":")[0] + " threads"
    key = {"cpu": host_compiler.cpu_identity(), "numpy": numpy.__version__, "mkl": path,
           "mkl_version": _mkl_version(), "threads": threads, "numpy_threads": threads_used}
    cache = host_compiler.cache_dir() / "cpu-kernels" / "blas-choice.json"
    try:
        entry = json.loads(cache.read_text())
        if entry.get("key") == key:
            return Choice(**entry["choice"]), None
    except (OSError, ValueError, TypeError, KeyError):
        pass
    mkl = Mkl(path, threads)
    numpy_rate, mkl_rate = measure(mkl.matmul, numpy_matmul)
    ratio = mkl_rate / numpy_rate
    name = "mkl" if ratio >= MKL_WINS_BY else "numpy"
    decided = Choice(name, f"measured: MKL {ratio:.2f}x NumPy's BLAS ({threads_used}) at the models' GEMM "
                           f"shapes", threads)
    _write_atomically(cache, json.dumps({"key": key, "choice": asdict(decided)}))
    return decided, mkl


def measure(mkl_matmul, numpy_matmul=numpy.matmul, shapes=MEASURE_SHAPES, seconds=MEASURE_SECONDS):
    """``(numpy GFLOP/s, mkl GFLOP/s)`` of ``numpy_matmul`` (NumPy's BLAS, as gpudl runs it) and
    ``mkl_matmul``, summed over ``shapes`` (float32, best of short timed runs)."""
    rates = [0.0, 0.0]
    generator = numpy.random.default_rng(0)
    for m, k, n in shapes:
        a = generator.random((m, k), numpy.float32)
        b = generator.random((k, n), numpy.float32)
        c = numpy.empty((m, n), numpy.float32)
        for slot, function in enumerate((numpy_matmul, mkl_matmul)):
            function(a, b, out=c)  # warm up: thread pools start, pages touched
            best = float("inf")
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                function(a, b, out=c)
                best = min(best, time.perf_counter() - start)
            rates[slot] += 2 * m * k * n / best / 1e9
    return rates[0], rates[1]


def _write_atomically(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename; a read-only cache is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError:
        pass


def describe() -> str:
    """One line for ``gpudl info``: the provider and why."""
    current = choice()
    threads = f", {current.threads} threads" if current.name == "mkl" else ""
    return f"{current.name} ({current.reason}{threads}); threads {current.pool}"


def reset():
    """Forget the choice (tests change GPUDL_BLAS); the next ``choice()`` decides again."""
    global _choice, matmul, _serial_gemm
    _choice, matmul, _serial_gemm = None, _first_matmul, {}
