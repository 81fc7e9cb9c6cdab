"""A whole recurrent layer's time loop in one native call on the host.

The per-step form (ops/rnn.py: a matrix product for the recurrence, then one cell launch) costs
two calls from Python per time step and direction, about 20 µs of Python and two OpenMP
fork/joins each: at batch 32 more than the step's arithmetic. Here the loop over time runs in
C++ inside one OpenMP parallel region, and each thread owns a block of batch rows for the whole
sequence: a row's recurrence never reads another row, so the threads never wait for each other.
Per step and thread: the rows' product through the BLAS's single-threaded ``cblas_?gemm``
(NumPy's OpenBLAS, set to one thread by ``openblas_pool``), then the cell over those rows, with
the cell functions of kernels/rnn.cuh, the same source the GPU and the per-step launches run.
Where OpenBLAS has unpacked small-matrix kernels, a thread's product goes in pieces small enough
for them (``openblas_pool.GEMM_PREAMBLE``'s sliced_gemm): one LSTM layer, hidden 128, 2 threads,
per step forward and backward, 41.7 and 36.5 us at batch 32 in one product per thread, 27.0 and
20.4 us in chunks of 12 rows; slices of columns did as well at batch 32 and 3-9% better from 64.

Used for float32 and float64, recurrent weights up to ``MAX_WEIGHT_BYTES``, while the BLAS runs on
gpudl's OpenMP threads (``blas.single_thread_gemm``); the rest keeps the per-step form.
"""
import ctypes
import functools

import numpy

from . import host_compiler, native_kernels, openblas_pool, serial_gemm_loops
from .kernel_specs import preamble

# Every thread multiplies its rows by all of W_hh each step (the per-step form splits W's columns
# between threads): LSTM, batch 32, 2 threads, forward + backward against the per-step form:
# hidden 256 (1 MB) 1.22x, 512 (4 MB) 1.00x, 1024 (16 MB) 0.81x.
MAX_WEIGHT_BYTES = 1 << 21

_SOURCE = r"""
namespace gpudl_recurrence {
using namespace gpudl_blas;

// out[first:last] = a[first:last] @ w for a [*, k] and w [k, n], C-contiguous.
template <typename I, typename T>
inline void rows_product(void* function, const T* a, const T* w, T* out, long long first,
                         long long last, long long k, long long n, long long small_mnk) {
  sliced_gemm<I, T>(function, NO_TRANS, NO_TRANS, last - first, n, k, a + first * k, k, w, n, T(0),
                    out + first * n, n, small_mnk);
}

// The time loop of one layer and direction. Forward, per step: result = operand(t, prev) @ w,
// then cell(t, prev, cur, row) for each row. Backward, steps in the opposite order: the cell,
// then the product (skipped after the last step unless `last_product`). Each thread owns rows
// [first, last) of the batch throughout.
template <typename I, typename T, typename Operand, typename Cell>
void drive(void* function, long long steps, long long batch, bool reverse, bool backward,
           bool last_product, long long k, long long n, const T* w, T* result,
           long long small_mnk, long long parallel_min, Operand operand, Cell cell) {
  const int threads = threads_for(double(batch) * k * n, parallel_min, batch);  // work of a step
#pragma omp parallel num_threads(threads) if(threads > 1)
  {
    const long long count = omp_get_num_threads(), id = omp_get_thread_num();
    const long long first = batch * id / count, last = batch * (id + 1) / count;
    for (long long s = 0; s < steps; ++s) {
      const long long t = (reverse != backward) ? steps - 1 - s : s;
      const long long prev = reverse ? t + 1 : t, cur = reverse ? t : t + 1;
      if (!backward) rows_product<I, T>(function, operand(t), w, result, first, last, k, n, small_mnk);
      for (long long row = first; row < last; ++row) cell(t, prev, cur, row);
      if (backward && (s + 1 < steps || last_product))
        rows_product<I, T>(function, operand(t), w, result, first, last, k, n, small_mnk);
    }
  }
}

#define GPUDL_SEQUENCE(NAME) template <typename I, typename T> void NAME(void* function, \
    long long steps, long long batch, long long H, bool reverse, const long long* lengths, \
    long long small_mnk, long long parallel_min, const T* w

// hs [T+1, B, H] (hs[prev] in, hs[cur] out), xw [T, B, H], hw [B, H] scratch.
GPUDL_SEQUENCE(rnn_forward), bool relu, T* hs, const T* xw, T* hw) {
  const long long BH = batch * H;
  auto operand = [=](long long t) { return hs + (reverse ? t + 1 : t) * BH; };
  auto cell = [=](long long t, long long prev, long long cur, long long row) {
    const T *x = xw + t * BH, *hp = hs + prev * BH;
    T* h = hs + cur * BH;
    if (relu) {
#pragma omp simd
      for (long long unit = 0; unit < H; ++unit) { const long long i = row * H + unit;
        gpudl::rnn_cell_forward(x[i], hw[i], hp[i], lengths, t, row, true, h[i]); }
    } else {
#pragma omp simd
      for (long long unit = 0; unit < H; ++unit) { const long long i = row * H + unit;
        gpudl::rnn_cell_forward(x[i], hw[i], hp[i], lengths, t, row, false, h[i]); }
    }
  };
  drive<I, T>(function, steps, batch, reverse, false, false, H, H, w, hw, small_mnk, parallel_min,
              operand, cell);
}

// w = W_hh [H, H]; dy [T, B, H] with step stride dy_stride (0: one zero [B, H]); dh_rec, dh
// [B, H] in/out; dpre [T, B, H].
GPUDL_SEQUENCE(rnn_backward), bool relu, bool last_product, const T* hs, const T* dy,
    long long dy_stride, T* dh_rec, T* dh, T* dpre) {
  const long long BH = batch * H;
  auto operand = [=](long long t) { return (const T*)(dpre + t * BH); };
  auto cell = [=](long long t, long long prev, long long cur, long long row) {
    const T *h = hs + cur * BH, *g = dy + t * dy_stride;
    T* d = dpre + t * BH;
    if (relu) {
#pragma omp simd
      for (long long unit = 0; unit < H; ++unit) { const long long i = row * H + unit;
        gpudl::rnn_cell_backward(h[i], g[i], dh_rec[i], lengths, t, row, true, dh[i], d[i]); }
    } else {
#pragma omp simd
      for (long long unit = 0; unit < H; ++unit) { const long long i = row * H + unit;
        gpudl::rnn_cell_backward(h[i], g[i], dh_rec[i], lengths, t, row, false, dh[i], d[i]); }
    }
  };
  drive<I, T>(function, steps, batch, reverse, true, last_product, H, H, w, dh_rec, small_mnk,
              parallel_min, operand, cell);
}

// w = W_hh.T [H, 4H]; gates [T, B, 4H] (pre-activations in, activations out); hw [B, 4H]
// scratch; hs, cs [T+1, B, H]; tanh_c [T, B, H].
GPUDL_SEQUENCE(lstm_forward), T* hs, T* gates, T* hw, T* cs, T* tanh_c) {
  const long long BH = batch * H;
  auto operand = [=](long long t) { return (const T*)(hs + (reverse ? t + 1 : t) * BH); };
  auto cell = [=](long long t, long long prev, long long cur, long long row) {
    T* g = gates + t * 4 * BH;
    const T *cp = cs + prev * BH, *hp = hs + prev * BH;
    T *c = cs + cur * BH, *h = hs + cur * BH, *tc = tanh_c + t * BH;
#pragma omp simd
    for (long long unit = 0; unit < H; ++unit) { const long long i = row * H + unit;
      gpudl::lstm_cell_forward(g, hw, cp[i], hp[i], lengths, t, row, unit, H, c[i], h[i], tc[i]); }
  };
  drive<I, T>(function, steps, batch, reverse, false, false, H, 4 * H, w, hw, small_mnk,
              parallel_min, operand, cell);
}

// w = W_hh [4H, H]; act [T, B, 4H]; dh_rec, dh, dc [B, H] in/out; dgates [T, B, 4H].
GPUDL_SEQUENCE(lstm_backward), bool last_product, const T* act, const T* cs, const T* tanh_c,
    const T* dy, long long dy_stride, T* dh_rec, T* dh, T* dc, T* dgates) {
  const long long BH = batch * H;
  auto operand = [=](long long t) { return (const T*)(dgates + t * 4 * BH); };
  auto cell = [=](long long t, long long prev, long long cur, long long row) {
    const T *a = act + t * 4 * BH, *cp = cs + prev * BH, *tc = tanh_c + t * BH;
    const T* g = dy + t * dy_stride;
    T* d = dgates + t * 4 * BH;
#pragma omp simd
    for (long long unit = 0; unit < H; ++unit) { const long long i = row * H + unit;
      gpudl::lstm_cell_backward(a, cp[i], tc[i], g[i], dh_rec[i], lengths, t, row, unit, H,
                                dh[i], dc[i], d); }
  };
  drive<I, T>(function, steps, batch, reverse, true, last_product, 4 * H, H, w, dh_rec, small_mnk,
              parallel_min, operand, cell);
}

// w = W_hh.T [H, 3H]; xw [T, B, 3H]; hw [B, 3H] scratch; bias_hh [3H]; act [T, B, 4H].
GPUDL_SEQUENCE(gru_forward), T* hs, const T* xw, T* hw, const T* bias_hh, T* act) {
  const long long BH = batch * H;
  auto operand = [=](long long t) { return (const T*)(hs + (reverse ? t + 1 : t) * BH); };
  auto cell = [=](long long t, long long prev, long long cur, long long row) {
    const T *x = xw + t * 3 * BH, *hp = hs + prev * BH;
    T *a = act + t * 4 * BH, *h = hs + cur * BH;
#pragma omp simd
    for (long long unit = 0; unit < H; ++unit) { const long long i = row * H + unit;
      gpudl::gru_cell_forward(x, hw, bias_hh, hp[i], lengths, t, row, unit, H, a, h[i]); }
  };
  drive<I, T>(function, steps, batch, reverse, false, false, H, 3 * H, w, hw, small_mnk,
              parallel_min, operand, cell);
}

// w = W_hh [3H, H]; dgx, dgh [T, B, 3H].
GPUDL_SEQUENCE(gru_backward), bool last_product, const T* act, const T* hs, const T* dy,
    long long dy_stride, T* dh_rec, T* dh, T* dgx, T* dgh) {
  const long long BH = batch * H;
  auto operand = [=](long long t) { return (const T*)(dgh + t * 3 * BH); };
  auto cell = [=](long long t, long long prev, long long cur, long long row) {
    const T *a = act + t * 4 * BH, *hp = hs + prev * BH, *g = dy + t * dy_stride;
    T *dx = dgx + t * 3 * BH, *dr = dgh + t * 3 * BH;
#pragma omp simd
    for (long long unit = 0; unit < H; ++unit) { const long long i = row * H + unit;
      gpudl::gru_cell_backward(a, hp[i], g[i], dh_rec[i], lengths, t, row, unit, H, dh[i], dx,
                               dr); }
  };
  drive<I, T>(function, steps, batch, reverse, true, last_product, 3 * H, H, w, dh_rec, small_mnk,
              parallel_min, operand, cell);
}
}  // namespace gpudl_recurrence

"""

_COMMON = ("void* function", "long long steps", "long long batch", "long long H", "bool reverse",
           "const long long* lengths", "long long small_mnk", "long long parallel_min", "const T* w")
# Each loop's own parameters after the common ones, as declared in _SOURCE.
LOOPS = {
    "rnn_forward": ("bool relu", "T* hs", "const T* xw", "T* hw"),
    "rnn_backward": ("bool relu", "bool last_product", "const T* hs", "const T* dy",
                     "long long dy_stride", "T* dh_rec", "T* dh", "T* dpre"),
    "lstm_forward": ("T* hs", "T* gates", "T* hw", "T* cs", "T* tanh_c"),
    "lstm_backward": ("bool last_product", "const T* act", "const T* cs", "const T* tanh_c",
                      "const T* dy", "long long dy_stride", "T* dh_rec", "T* dh", "T* dc",
                      "T* dgates"),
    "gru_forward": ("T* hs", "const T* xw", "T* hw", "const T* bias_hh", "T* act"),
    "gru_backward": ("bool last_product", "const T* act", "const T* hs", "const T* dy",
                     "long long dy_stride", "T* dh_rec", "T* dh", "T* dgx", "T* dgh"),
}
_INTEGERS = {False: "int32_t", True: "int64_t"}
_CTYPES = {"bool": ctypes.c_bool, "long long": ctypes.c_longlong}


def entry_name(loop, dtype, ilp64):
    """The exported symbol of ``loop`` for ``dtype`` and a BLAS with 64-bit (or 32-bit) integers."""
    return f"gpudl_{loop}_{openblas_pool.entry_suffix(dtype, ilp64)}"


def library_source():
    """_SOURCE after the cell functions (kernels/rnn.cuh with its headers, as the per-step kernels
    use them), with one ``extern "C"`` entry per loop, dtype and BLAS integer width."""
    parts = [host_compiler.SHIM, host_compiler.OPENMP_SERIAL, openblas_pool.GEMM_PREAMBLE,
             preamble("activations.cuh", "rnn.cuh"), _SOURCE]
    for loop, own in LOOPS.items():
        params = _COMMON + own
        names = ", ".join(p.split()[-1].lstrip("*") for p in params)
        for dtype, c_type in serial_gemm_loops.C_TYPES.items():
            for ilp64, integer in _INTEGERS.items():
                declared = ", ".join(p.replace("T*", f"{c_type}*") for p in params)
                parts.append(f'extern "C" void {entry_name(loop, dtype, ilp64)}({declared}) {{\n'
                             f"  gpudl_recurrence::{loop}<{integer}, {c_type}>({names});\n}}")
    return "\n".join(parts)


def _argument_type(param):
    declared = param.rsplit(" ", 1)[0]
    return ctypes.c_void_p if declared.endswith("*") else _CTYPES[declared]


class Runner:
    """The compiled loops of one dtype, bound to a single-threaded ``cblas_?gemm``
    (a ``blas.SerialGemm``)."""

    def __init__(self, dtype, gemm):
        lib = host_compiler.build(library_source(), name="recurrence")
        native_kernels._serial_after_fork(lib)
        self.dtype, self.gemm = dtype, gemm
        self.loops = {}
        for loop, own in LOOPS.items():
            entry = getattr(lib, entry_name(loop, dtype, gemm.ilp64))
            entry.restype = None
            entry.argtypes = [_argument_type(p) for p in _COMMON + own]
            self.loops[loop] = entry

    def run(self, loop, w, lengths, steps, batch, *own, reverse):
        """Run ``loop`` (a key of :data:`LOOPS`) over ``steps`` time steps of ``batch`` rows: ``w``
        is the step's right operand (C-contiguous, ``[H, G*H]`` forward, ``[G*H, H]`` backward),
        ``lengths`` an int64 array of each row's valid steps or None (all valid), ``own`` the
        loop's own arguments in :data:`LOOPS` order (arrays C-contiguous, of this runner's dtype,
        shaped as ``_SOURCE`` states). Releases the GIL while it runs."""
        if lengths is None:
            lengths = all_valid_lengths(batch)
        values = [self.gemm.address, steps, batch, min(w.shape), reverse,
                  self._pointer(lengths, numpy.dtype(numpy.int64)), self.gemm.small_matrix_mnk,
                  openblas_pool.PARALLEL_MIN, self._pointer(w)]
        for param, value in zip(LOOPS[loop], own):
            values.append(self._pointer(value) if "*" in param else value)
        self.loops[loop](*values)

    def _pointer(self, array, dtype=None):
        return serial_gemm_loops.data_pointer("recurrence", array, dtype or self.dtype)


@functools.lru_cache(maxsize=64)
def all_valid_lengths(batch):
    """Lengths (int64, read-only) that no sequence of ``batch`` rows reaches: every step valid, the
    cells' ``lengths`` argument for ``lengths=None``."""
    lengths = numpy.full(batch, 1 << 62, dtype=numpy.int64)
    lengths.flags.writeable = False
    return lengths


def runner(dtype, weight_shape):
    """The :class:`Runner` for ``dtype`` and recurrent weights of ``weight_shape``, or None where
    the per-step form runs instead: float16, weights over ``MAX_WEIGHT_BYTES``, or a BLAS that
    keeps its own threads (``blas.single_thread_gemm``)."""
    return serial_gemm_loops.runner(Runner, dtype, weight_shape, MAX_WEIGHT_BYTES)
