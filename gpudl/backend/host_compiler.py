"""Compile the kernels' CUDA C++ for the host CPU and cache the shared libraries.

The kernel headers in ``kernels/`` are plain templated functions; :data:`SHIM` makes them valid
host C++: ``__device__`` means nothing, the ``std::`` math overloads are visible unqualified (so
``exp(float)`` stays in float, as on the device) and ``float16`` is a 2-byte class with CuPy's
semantics (cupy/float16.cuh: arithmetic in float, rounding on construction and assignment).

:func:`build` compiles a source once per (source, compiler, flags, CPU) into
``cache_dir()/cpu-kernels``: the library's file name is a hash of all four, so a changed header,
compiler, flag or machine gets a new file and a stale one is never loaded. Builds go to a private
temporary file that is moved into place with ``os.replace``, so processes building the same
library at once each finish with a complete file; a library that fails to load or does not carry
its own key (a truncated or foreign file) is rebuilt.
"""
import _ctypes
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

# What the product builds with: optimised and vectorised for this CPU, OpenMP. No FMA contraction
# and no fast-math, so results are those of the NumPy twins' operation order (NaN and inf kept).
NATIVE_FLAGS = ("-std=c++17", "-O3", "-march=native", "-fopenmp", "-ffp-contract=off",
                "-fno-math-errno", "-fno-trapping-math")
KEY_SYMBOL = "gpudl_library_key"

SHIM = r"""
#include <cmath>
#include <cstdint>
#include <cstddef>
#include <algorithm>
#define __device__
#define __host__
#define __forceinline__ inline
using std::exp; using std::expm1; using std::log; using std::log1p;
using std::erf; using std::sqrt; using std::isfinite; using std::isnan; using std::max;
using std::min; using std::fabs;
// tanh in float: glibc's tanhf goes through expm1f and costs ~30 ns; from exp in double the
// result rounds to the correctly rounded float (x itself below 2^-12, where tanh x = x in float).
// tanh(double) stays the C library's.
inline float tanh(float x) {
  const double a = std::fabs((double)x);
  if (a < 0x1p-12) return x;
  const double e = std::exp(2.0 * a);
  return std::copysign((float)(1.0 - 2.0 / (e + 1.0)), x);
}
#define CUDART_INF_F __builtin_inff()
#define CUDART_NAN_F __builtin_nanf("")
#define CUDART_INF __builtin_inf()
#define CUDART_NAN __builtin_nan("")

// Mirrors cupy/float16.cuh: arithmetic in float, rounding to half on construction/assignment.
class float16 {
  _Float16 data_;
 public:
  float16() = default;
  float16(float v) : data_((_Float16)v) {}
  explicit float16(bool v) : data_((_Float16)(float)v) {}
  explicit float16(double v) : data_((_Float16)(float)v) {}
  explicit float16(int v) : data_((_Float16)(float)v) {}
  explicit float16(unsigned int v) : data_((_Float16)(float)v) {}
  explicit float16(long long v) : data_((_Float16)(float)v) {}
  explicit float16(unsigned long long v) : data_((_Float16)(float)v) {}
  operator float() const { return (float)data_; }
  float16& operator=(const float16&) = default;
  template <typename U> float16& operator=(const U& rhs) { *this = static_cast<float16>(rhs); return *this; }
  template <typename U> float16& operator+=(const U& r) { *this = *this + r; return *this; }
  template <typename U> float16& operator-=(const U& r) { *this = *this - r; return *this; }
  template <typename U> float16& operator*=(const U& r) { *this = *this * r; return *this; }
  template <typename U> float16& operator/=(const U& r) { *this = *this / r; return *this; }
};
"""

# NumPy arrays as Python passes them (``ndarray.__array_struct__``: a capsule holding NumPy's
# PyArrayInterface) and the GIL, through the Python C API of the running interpreter.
PYTHON_ARRAYS = r"""
extern "C" {
void* PyCapsule_GetPointer(void* capsule, const char* name);
void* PyEval_SaveThread(void);
void PyEval_RestoreThread(void* state);
}
namespace gpudl_host {
struct ArrayInterface {  // numpy/ndarraytypes.h: PyArrayInterface
  int two; int nd; char typekind; int itemsize; int flags;
  std::intptr_t* shape; std::intptr_t* strides; void* data; void* descr;
};
inline void* array_data(void* capsule) {
  return static_cast<ArrayInterface*>(PyCapsule_GetPointer(capsule, nullptr))->data;
}
}  // namespace gpudl_host
"""

# GNU OpenMP's thread pool does not survive fork(): a child's first parallel loop would wait for
# the parent's threads forever. Each kernel library exports this, for an at-fork handler.
OPENMP_SERIAL = r"""
#include <omp.h>
extern "C" void gpudl_openmp_serial() { omp_set_num_threads(1); }
"""


class CompilerUnavailable(RuntimeError):
    """No usable host C++ compiler (missing, or it cannot build the kernels)."""


class HostCompileError(RuntimeError):
    """The host compiler rejected a source; the message holds its diagnostics."""


def compiler():
    """The C++ compiler command: ``$CXX``, else ``g++``."""
    return os.environ.get("CXX") or "g++"


def cache_dir() -> Path:
    """gpudl's cache folder: ``$GPUDL_CACHE_DIR``, else ``$XDG_CACHE_HOME/gpudl``, else
    ``~/.cache/gpudl``. Compiled CPU kernels live in its ``cpu-kernels`` subfolder."""
    explicit = os.environ.get("GPUDL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpudl"


@functools.cache
def compiler_identity(command):
    """``(path, version line)`` of compiler ``command``; raises CompilerUnavailable."""
    path = shutil.which(command)
    if path is None:
        raise CompilerUnavailable(f"C++ compiler {command!r} not found (set CXX or install g++)")
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CompilerUnavailable(f"C++ compiler {path} does not run: {exc}") from None
    if proc.returncode:
        raise CompilerUnavailable(f"C++ compiler {path} does not run: {proc.stderr.strip()}")
    return path, (proc.stdout.splitlines() or ["unknown version"])[0]


@functools.cache
def cpu_identity():
    """A description of this CPU that covers what ``-march=native`` reads (model and flags)."""
    model, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = value.strip()
                    break
    except OSError:
        pass
    return f"{platform.machine()} {model} {flags}"


def library_key(source, flags):
    """The hash naming the library of ``source`` built with ``flags`` by today's compiler on
    this CPU (raises CompilerUnavailable)."""
    path, version = compiler_identity(compiler())
    text = "\0".join([source, path, version, " ".join(flags), cpu_identity()])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def build(source, flags=NATIVE_FLAGS, name="k"):
    """Compile ``source`` (cached) and return the loaded ``ctypes.CDLL``.

    The source gets a ``gpudl_library_key`` function appended that returns the cache key, which
    is checked on load. Raises CompilerUnavailable or HostCompileError.
    """
    key = library_key(source, flags)
    folder = cache_dir() / "cpu-kernels"
    target = folder / f"{name}-{key}.so"
    if target.exists():
        lib = _load_checked(target, key)
        if lib is not None:
            return lib
    folder.mkdir(parents=True, exist_ok=True)
    full = source + f'\nextern "C" const char* {KEY_SYMBOL}() {{ return "{key}"; }}\n'
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp:
        cpp, out = Path(tmp) / "k.cpp", Path(tmp) / "k.so"
        cpp.write_text(full)
        command = [compiler(), *flags, "-shared", "-fPIC", str(cpp), "-o", str(out)]
        try:
            proc = subprocess.run(command, capture_output=True, text=True)
        except OSError as exc:
            raise CompilerUnavailable(f"C++ compiler {compiler()!r} does not run: {exc}") from None
        if proc.returncode:
            raise HostCompileError(f"{' '.join(command)} failed:\n{proc.stderr}")
        os.replace(out, target)  # atomic: readers see the old file or the whole new one
    lib = _load_checked(target, key)
    if lib is None:
        raise HostCompileError(f"{target} was just built but does not load")
    return lib


def _load_checked(path, key):
    """The library at ``path`` if it loads and carries ``key``, else None (after deleting it)."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        lib = None
    if lib is not None:
        check = getattr(lib, KEY_SYMBOL, None)
        if check is not None:
            check.restype = ctypes.c_char_p
            if check() == key.encode():
                return lib
        # unload it: the loader would otherwise hand this same library back for the rebuilt file
        _ctypes.dlclose(lib._handle)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    return None
