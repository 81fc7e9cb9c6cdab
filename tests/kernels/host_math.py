"""Run the kernels' CUDA C++ (headers *and* operation strings) on the host with g++.

A small shim maps ``__device__`` to nothing, brings the ``std::`` math overloads into the global
namespace (so ``exp(float)`` stays float, as on the device) and defines a ``float16`` class that
mirrors CuPy's (cupy/float16.cuh): 2-byte storage, arithmetic through ``operator float``,
rounding on construction/assignment. A spec from ``gpudl.backend.kernel_specs`` becomes a C++
loop over flat, C-contiguous arrays; the .so is cached by source hash.

Needs only NumPy and g++ (``_Float16``: GCC >= 12 on x86-64).
"""
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

CXX = os.environ.get("CXX", "g++")
CACHE_DIR = Path(os.environ.get("GPUDL_HOST_KERNEL_CACHE",
                                Path(tempfile.gettempdir()) / "gpudl-host-kernels"))

SHIM = r"""
#include <cmath>
#include <cstdint>
#include <cstddef>
#include <algorithm>
#define __device__
#define __host__
#define __forceinline__ inline
using std::exp; using std::expm1; using std::log; using std::log1p; using std::tanh;
using std::erf; using std::sqrt; using std::isfinite; using std::isnan; using std::max;
using std::min; using std::fabs;
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

CTYPES = {"float16": "float16", "float32": "float", "float64": "double", "int8": "signed char",
          "int16": "short", "int32": "int", "int64": "long long", "uint8": "unsigned char",
          "uint16": "unsigned short", "uint32": "unsigned int", "uint64": "unsigned long long",
          "bool": "bool"}


def parse_params(text):
    """``"raw T x, float64 a"`` -> ``[(raw, type, name), ...]``."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        words = part.split()
        raw = words[0] == "raw"
        if raw:
            words = words[1:]
        out.append((raw, words[0], words[1]))
    return out


def _type_map(params, dtypes):
    """Placeholder letter -> C type, from the dtypes given for each param."""
    tmap = {}
    for (_, typ, _), dt in zip(params, dtypes):
        if len(typ) == 1:
            dt = dt[1] if isinstance(dt, tuple) else dt
            tmap.setdefault(typ, CTYPES[np.dtype(dt).name])
    return tmap


def _ctype(typ, tmap):
    return tmap[typ] if len(typ) == 1 else CTYPES[typ]


def elementwise_source(spec, dtypes, preamble=None):
    """C++ for an elementwise spec; ``dtypes`` per in+out param, ``("scalar", dt)`` for scalars."""
    ins, outs = parse_params(spec["in_params"]), parse_params(spec["out_params"])
    params = ins + outs
    tmap = _type_map(params, dtypes)
    lines = [SHIM] + [f"typedef {c} {t};" for t, c in tmap.items()]
    lines += [spec["preamble"] if preamble is None else preamble,
              'extern "C" void run(void** _args, long long _n) {']
    body = []
    for k, ((raw, typ, name), dt) in enumerate(zip(params, dtypes)):
        const = "const " if k < len(ins) else ""
        ct = _ctype(typ, tmap)
        if isinstance(dt, tuple):
            lines.append(f"  const {ct} {name} = *(const {ct}*)_args[{k}];")
        elif raw:
            lines.append(f"  {const}{ct}* {name} = ({const}{ct}*)_args[{k}];")
        else:
            lines.append(f"  {const}{ct}* _raw_{name} = ({const}{ct}*)_args[{k}];")
            body.append(f"    {const}{ct}& {name} = _raw_{name}[i];")
    return "\n".join(lines + ["  for (long long i = 0; i < _n; ++i) {"] + body
                     + ["    " + spec["operation"] + ";", "  }", "}"])


def reduction_source(spec, dtypes, preamble=None):
    """C++ for a reduction spec over the last axis: inputs [rows, cols], outputs [rows]."""
    ins, outs = parse_params(spec["in_params"]), parse_params(spec["out_params"])
    tmap = _type_map(ins + outs, dtypes)
    reduce_type = spec["reduce_type"]
    rt = tmap.get(reduce_type, CTYPES.get(reduce_type, reduce_type))
    lines = [SHIM] + [f"typedef {c} {t};" for t, c in tmap.items()]
    lines += [spec["preamble"] if preamble is None else preamble,
              f"#define REDUCE(a, b) ({spec['reduce_expr']})",
              f"#define POST_MAP(a) ({spec['post_map_expr']})",
              f"typedef {rt} _type_reduce;",
              'extern "C" void run(void** _args, long long _rows, long long _cols) {',
              "  for (long long _r = 0; _r < _rows; ++_r) {",
              f"    _type_reduce _s = _type_reduce({spec['identity']});",
              "    for (long long _c = 0; _c < _cols; ++_c) {",
              "      long long _j = _r * _cols + _c;"]
    for k, (_, typ, name) in enumerate(ins):
        ct = _ctype(typ, tmap)
        lines.append(f"      const {ct} {name} = ((const {ct}*)_args[{k}])[_j];")
    lines += [f"      _type_reduce _a = static_cast<_type_reduce>({spec['map_expr']});",
              "      _s = REDUCE(_s, _a);", "    }"]
    for k, (_, typ, name) in enumerate(outs):
        ct = _ctype(typ, tmap)
        lines.append(f"    {ct}& {name} = (({ct}*)_args[{len(ins) + k}])[_r];")
    return "\n".join(lines + ["    POST_MAP(_s);", "  }", "}"])


class HostCompileError(Exception):
    pass


def build(source):
    """Compile ``source`` to a shared library (cached by hash) and load it."""
    digest = hashlib.sha256((CXX + source).encode()).hexdigest()[:24]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    so = CACHE_DIR / f"k_{digest}.so"
    if not so.exists():
        with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
            cpp = Path(tmp) / "k.cpp"
            cpp.write_text(source)
            out = Path(tmp) / "k.so"
            proc = subprocess.run(
                [CXX, "-std=c++17", "-O2", "-shared", "-fPIC", "-ffp-contract=off",
                 "-fno-fast-math", str(cpp), "-o", str(out)], capture_output=True, text=True)
            if proc.returncode:
                raise HostCompileError(proc.stderr)
            shutil.move(str(out), so)
    return ctypes.CDLL(str(so))


def _pointer(value, dt):
    if isinstance(dt, tuple):
        arr = np.array(value, dtype=dt[1])
        return arr, arr.ctypes.data
    assert value.flags.c_contiguous and value.dtype == np.dtype(dt), (value.dtype, dt)
    return value, value.ctypes.data


def run_elementwise(spec, args, dtypes, size, preamble=None):
    """Run an elementwise spec over ``size`` elements; ``args`` per in+out param (outs written)."""
    lib = build(elementwise_source(spec, dtypes, preamble))
    keep = [_pointer(a, d) for a, d in zip(args, dtypes)]
    ptrs = (ctypes.c_void_p * len(keep))(*[p for _, p in keep])
    lib.run(ptrs, ctypes.c_longlong(size))


def run_reduction(spec, args, dtypes, rows, cols, preamble=None):
    """Run a reduction spec: inputs are C-contiguous [rows, cols], outputs [rows]."""
    lib = build(reduction_source(spec, dtypes, preamble))
    keep = [_pointer(a, d) for a, d in zip(args, dtypes)]
    ptrs = (ctypes.c_void_p * len(keep))(*[p for _, p in keep])
    lib.run(ptrs, ctypes.c_longlong(rows), ctypes.c_longlong(cols))


def have_float16():
    """Whether the host compiler supports ``_Float16`` (GCC >= 12 on x86-64)."""
    try:
        build("_Float16 probe(float x) { return (_Float16)x; }\n"
              'extern "C" void run() {}')
        return True
    except (HostCompileError, OSError):
        return False
