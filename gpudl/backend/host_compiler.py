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
using std::sqrt; using std::isfinite; using std::isnan; using std::max; using std::min;
using std::fabs;
#define CUDART_INF_F __builtin_inff()
#define CUDART_NAN_F __builtin_nanf("")
#define CUDART_INF __builtin_inf()
#define CUDART_NAN __builtin_nan("")

// Float exp, expm1, log, log1p, tanh and erf without calls or branches, so that the kernels' loops
// over them vectorise (glibc's are scalar calls). exp, tanh and erf compute in float (twice the
// lanes; each says its error below); expm1, log and log1p work in double: the float argument is
// exact there, a polynomial with ~1e-12 relative error follows the range reduction, and the one
// rounding to float at the end gives the correctly rounded result but for rare near-ties (< 1 ulp),
// including overflow to inf, underflow to 0 and subnormal results at glibc's thresholds. Cases
// outside a formula's domain (NaN, +-inf, +-0, x <= -1 for log1p) are chosen by selects that the
// compiler turns into blends. The double overloads stay the C library's.
// Always inlined: a call left in a loop (GCC's size heuristics) would keep it scalar.
#define GPUDL_MATH inline __attribute__((always_inline))
namespace gpudl_math {
GPUDL_MATH double bits_to_double(std::uint64_t b) {
  double d;
  __builtin_memcpy(&d, &b, 8);
  return d;
}
GPUDL_MATH std::uint64_t double_to_bits(double d) {
  std::uint64_t b;
  __builtin_memcpy(&b, &d, 8);
  return b;
}
GPUDL_MATH double horner(double, double c) { return c; }
template <typename... Rest>
GPUDL_MATH double horner(double t, double c, double next, Rest... rest) {
  return horner(t, c * t + next, rest...);  // coefficients from the highest degree down
}
// NaN fails both compares and passes through.
GPUDL_MATH double clamp(double x, double lo, double hi) { return x < lo ? lo : (x > hi ? hi : x); }

// x = n ln2 + r with |r| <= ln2/2: 2^n in scale, expm1(r) in em1r (Taylor to r^11, rel. 1e-12).
// Caller keeps x within [-110, 90] (scale stays a normal double). Adding 1.5 * 2^52 rounds
// x / ln2 to the integer n held in the low mantissa bits; shifting them into the exponent field
// builds 2^n without a float-to-integer conversion.
GPUDL_MATH void exp_reduce(double x, double& scale, double& em1r, double& n) {
  const double shifter = 0x1.8p52;
  const double k = x * 1.4426950408889634 + shifter;
  n = k - shifter;
  const double r = x - n * 0.6931471805599453;
  scale = bits_to_double((double_to_bits(k) << 52) + (std::uint64_t(1023) << 52));
  em1r = r * horner(r, 1.0 / 39916800, 1.0 / 3628800, 1.0 / 362880, 1.0 / 40320, 1.0 / 5040,
                    1.0 / 720, 1.0 / 120, 1.0 / 24, 1.0 / 6, 0.5, 1.0);
}
GPUDL_MATH double exp_core(double x) {  // exp(x) for x in [-110, 90] or NaN
  double scale, em1r, n;
  exp_reduce(x, scale, em1r, n);
  return scale + scale * em1r;
}
GPUDL_MATH double expm1_core(double x) {  // expm1(x) for x in [-110, 90] or NaN; exact sign of 0
  double scale, em1r, n;
  exp_reduce(x, scale, em1r, n);
  return n == 0 ? em1r : scale * em1r + (scale - 1.0);
}
// log(u) for a positive normal double u: u = 2^k m with m in [sqrt(1/2), sqrt(2)), then
// log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172, as an odd series to s^17. Only
// unsigned 64-bit adds and logical shifts: AVX2 has no 64-bit arithmetic shift or int64-to-double
// conversion, so k is held biased by 2048 and turned into a double through the 2^52 mantissa.
GPUDL_MATH double log_core(double u) {
  const std::uint64_t bias = std::uint64_t(2048) << 52;
  const std::uint64_t sqrt_half = double_to_bits(0.70710678118654752440);
  const std::uint64_t biased_k = (double_to_bits(u) - sqrt_half + bias) >> 52;
  const double m = bits_to_double(double_to_bits(u) - (biased_k << 52) + bias);
  const double k = bits_to_double(double_to_bits(0x1p52) | biased_k) - (0x1p52 + 2048.0);
  const double f = m - 1.0;
  const double s = f / (2.0 + f);
  const double z = s * s;
  const double series = horner(z, 1.0 / 17, 1.0 / 15, 1.0 / 13, 1.0 / 11, 1.0 / 9, 1.0 / 7,
                               1.0 / 5, 1.0 / 3);
  return k * 0.6931471805599453 + (2.0 * s + 2.0 * s * z * series);
}
}  // namespace gpudl_math

// exp in float arithmetic (twice the lanes of double; exp is the most used; < 1 ulp):
// x = n ln2 + r with ln2 split in two (n * hi exact for |n| < 256), exp r by Taylor to r^7
// (truncation < 0.1 ulp), times 2^(n/2) 2^(n - n/2): subnormal results round once, and n = 128
// still overflows.
GPUDL_MATH float exp(float x) {
  const float xc = x < -104.0f ? -104.0f : (x > 89.0f ? 89.0f : x);  // exp(-104) rounds to 0
  const float shifter = 0x1.8p23f;
  const float k = xc * 1.44269504f + shifter;
  const float n = k - shifter;
  const float r = (xc - n * 0x1.62e4p-1f) - n * 0x1.7f7d1cp-20f;
  const float tail = r * r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (
      1.0f / 720 + r * (1.0f / 5040))))));
  const float p = 1.0f + (r + tail);  // r exact, the small tail's rounding errors stay small
  std::uint32_t kb;
  __builtin_memcpy(&kb, &k, 4);
  const std::int32_t ni = std::int32_t(kb - 0x4B400000u), half = ni >> 1;  // k's bits - shifter's
  const std::uint32_t b1 = std::uint32_t(half + 127) << 23;
  const std::uint32_t b2 = std::uint32_t(ni - half + 127) << 23;
  float s1, s2;
  __builtin_memcpy(&s1, &b1, 4);
  __builtin_memcpy(&s2, &b2, 4);
  return p * s1 * s2;
}
GPUDL_MATH float expm1(float x) {
  return (float)gpudl_math::expm1_core(gpudl_math::clamp(x, -110.0, 90.0));
}
GPUDL_MATH float log(float x) {
  const float value = (float)gpudl_math::log_core(x);
  return x < CUDART_INF_F ? (x > 0 ? value : (x == 0 ? -CUDART_INF_F : CUDART_NAN_F)) : x;
}
// log1p(x) = log(u) + c / u with u = 1 + x rounded and c its rounding error (exact in double);
// log1p has the sign of x, which copysign gives -0 as well.
GPUDL_MATH float log1p(float x) {
  const double xd = x, u = 1.0 + xd;
  const double c = xd > 1.0 ? 1.0 - (u - xd) : xd - (u - 1.0);
  const float value = std::copysign((float)(gpudl_math::log_core(u) + c / u), x);
  return x < CUDART_INF_F ? (x > -1 ? value : (x == -1 ? -CUDART_INF_F : CUDART_NAN_F)) : x;
}
// tanh in float, from the float exp (< 1.03 ulp): |x| + |x|^3 P(x^2) below 0.8 (P: a least-squares
// fit of (tanh a - a) / a^3 in a^2 over [0, 0.81], relative error 5e-8), above it
// 1 - 2 / (exp(2|x|) + 1) (the fraction is below 0.34, so exp's error shrinks); 1.0f from 9.01.
GPUDL_MATH float tanh(float x) {
  const float a = std::fabs(x) > 10.0f ? 10.0f : std::fabs(x), z = a * a;  // NaN passes
  const float p = -0x1.5555560p-2f + z * (0x1.1111080p-3f + z * (-0x1.ba181a0p-5f + z * (
      0x1.66073c0p-6f + z * (-0x1.1f8fbc0p-7f + z * (0x1.b62d8c0p-9f + z * (-0x1.1106c20p-10f +
      z * 0x1.7f97160p-13f))))));
  const float small = a + a * (z * p);
  const float large = 1.0f - 2.0f / (exp(2.0f * a) + 1.0f);
  return std::copysign(a < 0.8f ? small : large, x);
}
// erf in float (< 1.32 ulp measured): below 1, |x| + |x| P(x^2) (P: a least-squares fit of
// erf(a) / a - 1 in a^2 over [0, 1], relative error 1e-9; the small correction carries the
// roundings); from 1 to 4, 1 - exp(-x^2) R(|x|) (R: a fit of erfc(a) exp(a^2) in (a - 2.5) / 1.5,
// relative error 3e-8), exp(-x^2) = exp(-hi) (1 - lo) with x^2 = hi + lo exactly (an fma);
// erf is 1.0f from 3.92 on.
GPUDL_MATH float erf(float x) {
  const float a = std::fabs(x) > 4.0f ? 4.0f : std::fabs(x);  // NaN passes
  const float z = a * a;
  const float p = 0x1.06eba8p-3f + z * (-0x1.81273ep-2f + z * (0x1.ce2cf0p-4f + z * (
      -0x1.b7f88cp-6f + z * (0x1.5401dcp-8f + z * (-0x1.a3dc18p-11f + z * 0x1.49234ep-14f)))));
  const float small = a + a * p;
  const float t = (a - 2.5f) * (1.0f / 1.5f);
  const float r = 0x1.afbb3ep-3f + t * (-0x1.c8ca4ap-4f + t * (0x1.cba910p-5f + t * (
      -0x1.ba7316p-6f + t * (0x1.991860p-7f + t * (-0x1.6d247ep-8f + t * (0x1.3dc1aep-9f + t * (
      -0x1.0800c2p-10f + t * (0x1.83ad20p-12f + t * (-0x1.433d52p-13f + t * (0x1.91371ep-14f +
      t * -0x1.1652c4p-15f))))))))));
  const float large = 1.0f - exp(-z) * (1.0f - std::fma(a, a, -z)) * r;
  return std::copysign(a < 1.0f ? small : large, x);
}

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
