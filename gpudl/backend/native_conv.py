"""Convolution products on the host in cache-sized blocks: im2col and GEMM per block of positions.

The per-op form (ops/conv.py) writes all of a layer's im2col columns, a KH*KW-fold copy of its
input, then multiplies them: at the bench CNN's second layer and batch 32, 7.2 MB written and read
back for every product, twice the L2 of this machine. Here each OpenMP thread takes whole output
rows, or pieces of one (window positions with all their batch elements), lays out their columns
with the ``im2col`` device function of kernels/conv.cuh (the same source as the GPU's and the
per-op launch) into a buffer of its own that stays in L2, and multiplies them at once with the
BLAS's single-threaded ``cblas_?gemm`` (``blas.single_thread_gemm``, in ``sliced_gemm``'s pieces):

* forward: ``out[:, rows] = W [O, C*KH*KW] @ cols(rows)`` (+ bias, while the block is in cache);
* weight gradient: ``gW += g[:, rows] @ cols(rows).T`` into one partial sum per thread, added
  in thread order at the end (deterministic for a given thread count);
* input gradient at stride 1 and from ``MIN_TRANSPOSED_CHANNELS`` input channels: the same
  forward, over the output gradient with the kernel flipped and its in/out channels swapped, and
  padding ``dilation * (K - 1) - pad`` (the transposed convolution), instead of a column gradient
  and col2im.

Layouts are ops/conv.py's: batch-last [C, H, W, N] inputs and [O, OH, OW, N] outputs, C-contiguous.
float32 and float64, groups = 1, weights up to ``MAX_WEIGHT_BYTES``, and only where the BLAS runs
on gpudl's threads; the rest keeps the per-op form.
"""
import ctypes

import numpy

from . import host_compiler, native_kernels, openblas_pool, serial_gemm_loops
from .kernel_specs import preamble

BLOCK_BYTES = 1 << 19  # a thread's column buffer: half of this machine's 1 MiB L2 per core
# Where blocks pay: with larger weights every block re-reads them (2 threads, forward + backward of
# one layer at batch 32: 0.29 MB of weights 1.18x faster blocked, 0.59 MB 0.95-0.99x, 2.4 MB
# 0.85x, 9.4 MB 0.68x); the transposed convolution computes few rows for few input channels
# (3 -> 64 channels, 7x7 kernel, 112x112: 0.49x with it, 1.22x with col2im).
MAX_WEIGHT_BYTES = 1 << 19
MIN_TRANSPOSED_CHANNELS = 16

_SOURCE = r"""
#include <memory>
#include <vector>
namespace gpudl_conv {
using namespace gpudl_blas;

// Element f of the full columns [R, OH, OW*N], stored in a block buffer from `shift` on.
template <typename T> struct Shifted {
  T* base;
  long long shift;
  T& operator[](long long f) const { return base[f - shift]; }
};

struct Geometry {
  long long N, C, H, W, KH, KW, OH, OW, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w;
  long long rows() const { return C * KH * KW; }
};

// A block of output positions: rows [oh0, oh1) x columns [ow0, ow1), either whole output rows or
// a piece of one; its columns are `width` consecutive ones of the full [R, OH*OW*N] from `first`.
struct Block {
  long long oh0, oh1, ow0, ow1, first, width;
};

// Block b of those of at most `positions` window positions each (see block_count).
inline Block block_of(long long b, const Geometry& g, long long positions) {
  long long oh0, oh1, ow0 = 0, ow1 = g.OW;
  if (positions >= g.OW) {
    const long long rows = positions / g.OW;
    oh0 = b * rows;
    oh1 = oh0 + rows < g.OH ? oh0 + rows : g.OH;
  } else {  // pieces of a row, of about equal size
    const long long pieces = (g.OW + positions - 1) / positions, size = (g.OW + pieces - 1) / pieces;
    oh0 = b / pieces;
    oh1 = oh0 + 1;
    ow0 = b % pieces * size;
    ow1 = ow0 + size < g.OW ? ow0 + size : g.OW;
  }
  return {oh0, oh1, ow0, ow1, (oh0 * g.OW + ow0) * g.N, (oh1 - oh0) * (ow1 - ow0) * g.N};
}

inline long long block_count(const Geometry& g, long long positions) {
  if (positions >= g.OW) return (g.OH + positions / g.OW - 1) / (positions / g.OW);
  return g.OH * ((g.OW + positions - 1) / positions);
}

// The block's columns into buf [R, width].
template <typename T>
void block_columns(const T* x, const Geometry& g, const Block& k, T* buf) {
  const long long run = (k.ow1 - k.ow0) * g.N, L = g.OH * g.OW * g.N;
  for (long long r = 0; r < g.rows(); ++r)
    for (long long oh = k.oh0; oh < k.oh1; ++oh) {
      const long long start = r * L + (oh * g.OW + k.ow0) * g.N;
      Shifted<T> cols{buf + r * k.width + (oh - k.oh0) * run, start};
      gpudl::im2col_run<T>(x, start, run, g.N, g.H, g.W, g.KH, g.KW, g.OH, g.OW, g.stride_h,
                           g.stride_w, g.pad_top, g.pad_left, g.dil_h, g.dil_w, cols);
    }
}

// out [O, OH*OW*N] = w [O, R] @ columns of x, plus bias [O] (if not null).
template <typename I, typename T>
void forward(void* function, const T* x, const T* w, const T* bias, T* out, long long O,
             Geometry g, long long positions, long long parallel_min, long long small_mnk) {
  const long long R = g.rows(), L = g.OH * g.OW * g.N, blocks = block_count(g, positions);
#pragma omp parallel num_threads(threads_for(double(O) * R * L, parallel_min, blocks))
  {
    const std::unique_ptr<T[]> buf(new T[R * positions * g.N]);  // no zero fill: every use writes it first
#pragma omp for schedule(static)
    for (long long b = 0; b < blocks; ++b) {
      const Block k = block_of(b, g, positions);
      block_columns(x, g, k, buf.get());
      T* o = out + k.first;
      sliced_gemm<I, T>(function, NO_TRANS, NO_TRANS, O, k.width, R, w, R, buf.get(), k.width, T(0), o,
                        L, small_mnk);
      if (bias)
        for (long long c = 0; c < O; ++c) {
          const T v = bias[c];
#pragma omp simd
          for (long long j = 0; j < k.width; ++j) o[c * L + j] += v;
        }
    }
  }
}

// gw [O, R] = g [O, OH*OW*N] @ (columns of x).T
template <typename I, typename T>
void weight_grad(void* function, const T* x, const T* gy, T* gw, long long O, Geometry g,
                 long long positions, long long parallel_min, long long small_mnk) {
  const long long R = g.rows(), L = g.OH * g.OW * g.N, blocks = block_count(g, positions);
  const int threads = threads_for(double(O) * R * L, parallel_min, blocks);
  std::vector<T> partial(threads > 1 ? (threads - 1) * O * R : 0);
#pragma omp parallel num_threads(threads)
  {
    const int id = omp_get_thread_num();
    T* sum = id == 0 ? gw : partial.data() + (id - 1) * O * R;  // thread 0 sums into gw itself
    const std::unique_ptr<T[]> buf(new T[R * positions * g.N]);  // no zero fill: every use writes it first
    T beta = T(0);
#pragma omp for schedule(static)
    for (long long b = 0; b < blocks; ++b) {
      const Block k = block_of(b, g, positions);
      block_columns(x, g, k, buf.get());
      sliced_gemm<I, T>(function, NO_TRANS, TRANS, O, R, k.width, gy + k.first, L, buf.get(), k.width,
                        beta, sum, R, small_mnk);
      beta = T(1);
    }
    if (beta == T(0))  // this thread had no block
      for (long long k = 0; k < O * R; ++k) sum[k] = T(0);
#pragma omp barrier
#pragma omp for schedule(static)
    for (long long k = 0; k < O * R; ++k)
      for (int t = 1; t < omp_get_num_threads(); ++t) gw[k] += partial[(t - 1) * O * R + k];
  }
}
}  // namespace gpudl_conv

#define GPUDL_CONV_ENTRIES(SUFFIX, I, T) \
extern "C" void gpudl_conv_forward_##SUFFIX(void* f, const T* x, const T* w, const T* bias, T* out, \
    long long O, const long long* geometry, long long positions, long long parallel_min, \
    long long small_mnk) { \
  const long long* v = geometry; \
  gpudl_conv::forward<I, T>(f, x, w, bias, out, O, {v[0], v[1], v[2], v[3], v[4], v[5], v[6], \
      v[7], v[8], v[9], v[10], v[11], v[12], v[13]}, positions, parallel_min, small_mnk); } \
extern "C" void gpudl_conv_weight_grad_##SUFFIX(void* f, const T* x, const T* gy, T* gw, \
    long long O, const long long* geometry, long long positions, long long parallel_min, \
    long long small_mnk) { \
  const long long* v = geometry; \
  gpudl_conv::weight_grad<I, T>(f, x, gy, gw, O, {v[0], v[1], v[2], v[3], v[4], v[5], v[6], \
      v[7], v[8], v[9], v[10], v[11], v[12], v[13]}, positions, parallel_min, small_mnk); }
GPUDL_CONV_ENTRIES(f32_i32, int32_t, float)
GPUDL_CONV_ENTRIES(f64_i32, int32_t, double)
GPUDL_CONV_ENTRIES(f32_i64, int64_t, float)
GPUDL_CONV_ENTRIES(f64_i64, int64_t, double)
"""

def library_source():
    """_SOURCE after the im2col device function (kernels/conv.cuh with common.cuh)."""
    return "\n".join([host_compiler.SHIM, host_compiler.OPENMP_SERIAL, openblas_pool.GEMM_PREAMBLE,
                      preamble("conv.cuh"), _SOURCE])


class Runner:
    """The blocked convolution products of one dtype, bound to a single-threaded ``cblas_?gemm``
    (a ``blas.SerialGemm``)."""

    def __init__(self, dtype, gemm):
        lib = host_compiler.build(library_source(), name="conv-blocks")
        native_kernels._serial_after_fork(lib)
        self.dtype, self.gemm = numpy.dtype(dtype), gemm
        suffix = openblas_pool.entry_suffix(dtype, gemm.ilp64)
        pointer, integer = ctypes.c_void_p, ctypes.c_longlong
        self._forward = getattr(lib, f"gpudl_conv_forward_{suffix}")
        self._forward.argtypes = [pointer] * 5 + [integer, pointer, integer, integer, integer]
        self._weight_grad = getattr(lib, f"gpudl_conv_weight_grad_{suffix}")
        self._weight_grad.argtypes = [pointer] * 4 + [integer, pointer, integer, integer, integer]
        for entry in (self._forward, self._weight_grad):
            entry.restype = None

    def forward(self, x, w, bias, out, geometry):
        """``out`` [O, OH, OW, N] = ``w`` [O, C*KH*KW] @ im2col(``x`` [C, H, W, N]) + ``bias`` [O]
        (or None); ``geometry`` from :func:`geometry`. Returns ``out``."""
        if out.size == 0 or x.size == 0:  # an empty batch or image: nothing to multiply
            out[...] = 0 if bias is None else bias.reshape(-1, 1, 1, 1)
            return out
        self._forward(self.gemm.address, self._pointer(x), self._pointer(w),
                      None if bias is None else self._pointer(bias), self._pointer(out), w.shape[0],
                      *self._layout(geometry))
        return out

    def weight_grad(self, x, gy, gw, geometry):
        """``gw`` [O, C*KH*KW] = ``gy`` [O, OH, OW, N] @ im2col(``x``).T. Returns ``gw``."""
        if gy.size == 0 or x.size == 0:
            gw[...] = 0
            return gw
        self._weight_grad(self.gemm.address, self._pointer(x), self._pointer(gy), self._pointer(gw),
                          gw.shape[0], *self._layout(geometry))
        return gw

    def transposes(self, x_shape, stride):
        """Whether the input gradient of a convolution of logical ``x_shape`` [N, C, H, W] is the
        transposed convolution (stride 1 and enough input channels) rather than col2im."""
        return tuple(stride) == (1, 1) and x_shape[1] >= MIN_TRANSPOSED_CHANNELS

    def _layout(self, geometry):
        """The geometry (as an int64 array's ctypes view, which keeps the array alive through the
        call), the window positions per block, the threads' work threshold and the BLAS's
        small-matrix limit (``openblas_pool.GEMM_PREAMBLE``'s sliced_gemm)."""
        n, c, _, _, kh, kw = geometry[:6]
        position_bytes = c * kh * kw * n * self.dtype.itemsize  # one position's columns
        return (numpy.array(geometry, dtype=numpy.int64).ctypes, max(1, BLOCK_BYTES // position_bytes),
                openblas_pool.PARALLEL_MIN, self.gemm.small_matrix_mnk)

    def _pointer(self, array):
        return serial_gemm_loops.data_pointer("conv blocks", array, self.dtype)


def geometry(x_shape, kernel, out_hw, stride, pads, dilation):
    """The 14 numbers the blocked products take: N, C, H, W (of logical [N, C, H, W] ``x_shape``),
    KH, KW, OH, OW, the strides, the top and left padding and the dilations."""
    n, c, h, w = x_shape
    return (n, c, h, w, *kernel, *out_hw, *stride, pads[0], pads[2], *dilation)


def runner(dtype, weight_shape):
    """The :class:`Runner` for a convolution of ``dtype`` with weights of ``weight_shape``, or None
    where the per-op form runs instead: float16, weights over ``MAX_WEIGHT_BYTES``, or a BLAS that
    keeps its own threads (``blas.single_thread_gemm``)."""
    return serial_gemm_loops.runner(Runner, dtype, weight_shape, MAX_WEIGHT_BYTES)
