"""C++ for kernels run on the host: CuPy's device-side vocabulary, compiled by g++.

The shim, the ``float16`` class (CuPy's semantics: arithmetic in float, rounding on assignment)
and the compile cache are the NumPy backend's (``gpudl.backend.host_compiler``, which compiles
the kernels for the CPU in production); this module adds what kernels see
beyond the math: ``CArray`` (``raw`` parameters and the arrays behind non-raw ones, indexed by a
flat C-order index, a multi-index or ``_ind.get()``, every access bounds-checked), ``CIndexer``,
atomics executed sequentially, CuPy's float16 helpers, and the ``i`` loop of a launch.
"""
import ctypes

import numpy

from gpudl.backend import host_compiler

from ._manifest import no_stand_in

# CuPy's C names (cupy/_core/_scalar.pyx::get_typename).
_C_NAMES = {"?": "bool", "b": "signed char", "B": "unsigned char", "h": "short",
            "H": "unsigned short", "i": "int", "I": "unsigned int", "l": "long long",
            "L": "unsigned long long", "q": "long long", "Q": "unsigned long long",
            "e": "float16", "f": "float", "d": "double", "F": "complex<float>",
            "D": "complex<double>"}

PRELUDE = host_compiler.SHIM + r"""
#include <cstring>
#include <initializer_list>
using std::pow; using std::sin; using std::cos; using std::tan; using std::exp2;
using std::log2; using std::log10; using std::floor; using std::ceil; using std::round;
using std::trunc; using std::fmin; using std::fmax; using std::fmod; using std::abs;
using std::copysign; using std::erfc; using std::isinf; using std::signbit; using std::cbrt;
using std::sinh; using std::cosh; using std::asin; using std::acos; using std::atan;
using std::atan2; using std::hypot; using std::lgamma; using std::tgamma; using std::rint;
#define CUDART_PI_F 3.141592654f
#define CUDART_PI 3.1415926535897931e+0
inline int isnan(float16 x) { return std::isnan(float(x)); }
inline int isinf(float16 x) { return std::isinf(float(x)); }
inline int isfinite(float16 x) { return std::isfinite(float(x)); }
inline int signbit(float16 x) { return std::signbit(float(x)); }
inline int iszero(float16 x) { return float(x) == 0.0f; }
inline float16 min(float16 x, float16 y) { return float16(std::min(float(x), float(y))); }
inline float16 max(float16 x, float16 y) { return float16(std::max(float(x), float(y))); }
inline float16 fmin(float16 x, float16 y) { return float16(std::fmin(float(x), float(y))); }
inline float16 fmax(float16 x, float16 y) { return float16(std::fmax(float(x), float(y))); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float rsqrt(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float f) { int v; std::memcpy(&v, &f, 4); return v; }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
inline long long __double_as_longlong(double d) { long long v; std::memcpy(&v, &d, 8); return v; }

// Launches run one element after another, so atomics are plain read-modify-writes.
template <typename T, typename U> inline T atomicAdd(T* p, U v) { T o = *p; *p = *p + v; return o; }
template <typename T, typename U> inline T atomicSub(T* p, U v) { T o = *p; *p = *p - v; return o; }
template <typename T, typename U> inline T atomicMax(T* p, U v) { T o = *p; if (o < v) *p = v; return o; }
template <typename T, typename U> inline T atomicMin(T* p, U v) { T o = *p; if (v < o) *p = v; return o; }
template <typename T, typename U> inline T atomicExch(T* p, U v) { T o = *p; *p = v; return o; }
template <typename T> inline T atomicCAS(T* p, T c, T v) { T o = *p; if (o == c) *p = v; return o; }

// First out-of-bounds access of the launch: {flag, parameter, index, size}.
extern "C" { long long _cupy_double_error[4]; }
inline void _cupy_double_oob(int param, long long index, long long size) {
  if (!_cupy_double_error[0]) {
    _cupy_double_error[0] = 1; _cupy_double_error[1] = param;
    _cupy_double_error[2] = index; _cupy_double_error[3] = size;
  }
}

template <int _ndim>
class CIndexer {
 public:
  static const int ndim = _ndim;
  typedef ptrdiff_t index_t[_ndim > 0 ? _ndim : 1];
 private:
  ptrdiff_t size_;
  ptrdiff_t shape_[_ndim > 0 ? _ndim : 1];
  index_t index_;
 public:
  explicit CIndexer(const long long* meta) : size_(1) {
    for (int d = 0; d < _ndim; ++d) { shape_[d] = meta[d]; size_ *= meta[d]; index_[d] = 0; }
    index_[0] = 0;
  }
  ptrdiff_t size() const { return size_; }
  const index_t& get() const { return index_; }
  void set(ptrdiff_t i) {
    for (int d = _ndim - 1; d > 0; --d) { index_[d] = i % shape_[d]; i /= shape_[d]; }
    index_[0] = i;
  }
};

// An array as a kernel sees it: C-order logical indexing through the strides, bounds-checked.
template <typename T, int _ndim>
class CArray {
 public:
  static const int ndim = _ndim;
 private:
  char* data_;
  ptrdiff_t size_;
  ptrdiff_t shape_[_ndim > 0 ? _ndim : 1];
  ptrdiff_t strides_[_ndim > 0 ? _ndim : 1];
  int param_;
  T& at(ptrdiff_t offset) const { return *reinterpret_cast<T*>(data_ + offset); }
  static T& dummy() { static T d; d = T(); return d; }
 public:
  CArray(void* data, const long long* meta, int param) : data_((char*)data), size_(meta[0]), param_(param) {
    for (int d = 0; d < _ndim; ++d) { shape_[d] = meta[1 + d]; strides_[d] = meta[1 + _ndim + d]; }
  }
  ptrdiff_t size() const { return size_; }
  const ptrdiff_t* shape() const { return shape_; }
  const ptrdiff_t* strides() const { return strides_; }
  T* data() const { return reinterpret_cast<T*>(data_); }
  T& ref(ptrdiff_t i) const {
    if (i < 0 || i >= size_) { _cupy_double_oob(param_, i, size_); return dummy(); }
    if (_ndim == 0) return at(0);
    ptrdiff_t diff = 0;
    for (int d = _ndim - 1; d > 0; --d) { diff += strides_[d] * (i % shape_[d]); i /= shape_[d]; }
    return at(diff + strides_[0] * i);
  }
  template <typename Int> T& ref_multi(const Int* idx, int n) const {
    ptrdiff_t diff = 0, flat = 0;
    for (int d = 0; d < _ndim; ++d) {
      const ptrdiff_t k = d < n ? (ptrdiff_t)idx[d] : 0;
      flat = flat * shape_[d] + k;
      if (k < 0 || k >= shape_[d]) { _cupy_double_oob(param_, flat, size_); return dummy(); }
      diff += strides_[d] * k;
    }
    return at(diff);
  }
  T& operator[](ptrdiff_t i) { return ref(i); }
  const T& operator[](ptrdiff_t i) const { return ref(i); }
  template <typename Int, size_t M> T& operator[](const Int (&idx)[M]) { return ref_multi(idx, M); }
  template <typename Int, size_t M> const T& operator[](const Int (&idx)[M]) const { return ref_multi(idx, M); }
  template <typename Int> T& operator[](std::initializer_list<Int> idx) {
    return ref_multi(idx.begin(), idx.size());
  }
  template <typename Int> const T& operator[](std::initializer_list<Int> idx) const {
    return ref_multi(idx.begin(), idx.size());
  }
};
"""

HostCompileError = host_compiler.HostCompileError
# Kernels are built many times over (one library per launch signature): quick to compile, and
# without FMA contraction so that results match the NumPy twins' rounding.
FLAGS = ("-std=c++17", "-O2", "-ffp-contract=off", "-fno-fast-math")
_libraries = {}


def c_name(dtype):
    """CuPy's C type name for ``dtype`` (``float16`` is CuPy's class)."""
    return _C_NAMES[numpy.dtype(dtype).char]


def host_type(dtype):
    """The C type a host kernel uses for ``dtype`` (complex kernels are not run on the host)."""
    if numpy.dtype(dtype).kind == "c":
        raise no_stand_in(f"a kernel argument of dtype {numpy.dtype(dtype)}",
                          "only bool, integer and float kernels run on the host")
    return c_name(dtype)


def typedefs(type_map):
    """``typedef <C type> T;`` lines, as CuPy's ``_TypeMap.get_typedef_code``."""
    return "".join(f"typedef {host_type(t)} {name};\n" for name, t in type_map)


def defines(options):
    """``-DNAME`` / ``-DNAME=VALUE`` compile options as ``#define`` lines (others ignored)."""
    lines = []
    for opt in options or ():
        if isinstance(opt, str) and opt.startswith("-D"):
            name, _, value = opt[2:].partition("=")
            lines.append(f"#define {name} {value}")
    return "\n".join(lines)


def compile_entry(source):
    """The ``_cupy_double_entry`` function of ``source`` (g++, cached by source hash)."""
    lib = _libraries.get(source)
    if lib is None:
        lib = host_compiler.build(source, FLAGS, name="cupy_double")
        lib._cupy_double_entry.restype = ctypes.c_int
        _libraries[source] = lib
    return lib


def launch(lib, pointers, meta):
    """Run the kernel once; return ``None`` or ``(param index, index, size)`` of the first OOB access."""
    error = (ctypes.c_longlong * 4).in_dll(lib, "_cupy_double_error")
    error[0] = 0
    lib._cupy_double_entry((ctypes.c_void_p * max(len(pointers), 1))(*pointers),
                           (ctypes.c_longlong * max(len(meta), 1))(*meta))
    return (error[1], error[2], error[3]) if error[0] else None
