"""NumPy's own OpenBLAS run on gpudl's OpenMP threads, so that one thread pool serves the process.

Why: after each multithreaded product, OpenBLAS's idle worker threads busy-wait for
``2**OPENBLAS_THREAD_TIMEOUT`` TSC ticks (default 2**28, about 0.1 s at 2.6 GHz) with bare
``nop``s (``YIELDING`` in OpenBLAS's ``common.h`` is ``sched_yield`` only off x86-64;
NumPy's bundled library imports no ``sched_yield`` at all). A compiled kernel's OpenMP thread
woken in that window finds its core taken and waits for the scheduler to preempt the spinner
(milliseconds), and the kernel's calling thread waits for it at the loop's end: a 33 µs ReLU
took 4.8 ms right after a GEMM. The timeout is read once, when NumPy loads OpenBLAS, so gpudl
cannot shorten it after ``import numpy``.

The fix is PyTorch's arrangement (MKL and its own kernels on one OpenMP pool): OpenBLAS is set
to one thread, and :class:`PooledGemm` splits each product into a grid of blocks of the result
(or whole matrices of a batch), one per OpenMP thread, each computed by OpenBLAS's
single-threaded ``cblas_?gemm``. The same libgomp threads then run the GEMMs and the kernels, and
an idle one spins briefly (libgomp's default, see ``cpu_kernels``), which no other pool competes with.
"""
import ctypes
import os
import re

import numpy

from . import host_compiler, native_kernels

# Each thread gets at least this many multiply-adds, so smaller products run on fewer threads
# (an MLP's last 32x512x10 layer on the calling thread alone): OpenBLAS's own rule
# (interface/gemm.c: SMP_THRESHOLD_MIN 65536 x GEMM_MULTITHREAD_THRESHOLD 4).
PARALLEL_MIN = 1 << 18
# Symbol spellings of the OpenBLAS builds NumPy ships or links: scipy-openblas64 (NumPy's
# wheels: ILP64, prefixed and suffixed), scipy-openblas32, and a plain distribution OpenBLAS.
_SPELLINGS = (("scipy_", "64_"), ("scipy_", ""), ("", "64_"), ("", ""))

# What every host loop that calls a single-threaded cblas_?gemm from gpudl's OpenMP threads needs
# (the pooled products here, native_recurrence, native_conv): the function type (I: the BLAS's
# integer), CBLAS's constants, and the thread count for an amount of work.
GEMM_PREAMBLE = r"""
#include <omp.h>
#include <cstdint>
namespace gpudl_blas {
template <typename I, typename T>
using cblas_gemm = void (*)(int, int, int, I, I, I, T, const T*, I, const T*, I, T, T*, I);
const int ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112;

// Threads for `work` multiply-adds: all of OpenMP's, but at most one per `parallel_min` of them
// (one below twice that) and at most `tasks`.
inline int threads_for(double work, long long parallel_min, long long tasks) {
  long long threads = omp_get_max_threads();
  if (work < double(threads) * parallel_min) threads = work < 2.0 * parallel_min ? 1 : work / parallel_min;
  return int(threads < tasks ? threads : tasks);
}

// C = op(A) op(B) + beta C (row-major, rows x columns, depth k) on the calling thread. With
// `small_mnk` > 0, in products of at most that many multiply-adds (OpenBLAS's unpacked
// small-matrix kernels, see SMALL_MATRIX_MNK): all rows by slices of a multiple of 32 columns
// where such a slice exists, else, for at most 512 rows, pieces of 32k rows by 32 columns.
template <typename I, typename T>
void sliced_gemm(void* function, int trans_a, int trans_b, long long rows, long long columns,
                 long long k, const T* a, long long lda, const T* b, long long ldb, T beta, T* c,
                 long long ldc, long long small_mnk) {
  const auto gemm = reinterpret_cast<cblas_gemm<I, T>>(function);
  long long piece = rows, slice = rows * k > 0 ? small_mnk / (rows * k) / 32 * 32 : 0;
  if (slice < 32 && rows <= 512 && k > 0 && small_mnk / (k * 32) >= 32) {
    piece = small_mnk / (k * 32) / 32 * 32;
    slice = 32;
  }
  const long long chunk = slice >= 32 ? slice : columns;
  for (long long top = 0; top < rows; top += piece) {
    const long long height = rows - top < piece ? rows - top : piece;
    const T* at = a + (trans_a == NO_TRANS ? top * lda : top);
    for (long long first = 0; first < columns; first += chunk) {
      const long long width = columns - first < chunk ? columns - first : chunk;
      gemm(ROW_MAJOR, trans_a, trans_b, height, width, k, T(1), at, lda,
           b + (trans_b == NO_TRANS ? first : first * ldb), ldb, beta, c + top * ldc + first, ldc);
    }
  }
}
}  // namespace gpudl_blas
"""

_SOURCE = GEMM_PREAMBLE + r"""
namespace {
using namespace gpudl_blas;

// Rows and columns of one of `parts` blocks of an m x n result: the grid (row parts x column
// parts) that packs the least, since each block's call packs its rows of A and its columns of B
// (cost m*k per column part plus n*k per row part); blocks are multiples of 16 elements (whole
// cache lines and SIMD tiles).
struct Grid {
  long long rows, columns, row_blocks, column_blocks;
  Grid(long long m, long long n, long long parts) {
    long long best = 1;
    for (long long p = 1; p <= parts; ++p)
      if (parts % p == 0 && m * (parts / p) + n * p < m * (parts / best) + n * best) best = p;
    rows = ((m + best - 1) / best + 15) / 16 * 16;
    columns = ((n + parts / best - 1) / (parts / best) + 15) / 16 * 16;
    row_blocks = (m + rows - 1) / rows;
    column_blocks = (n + columns - 1) / columns;
  }
};

// C[o, i] = op(A[o, i]) op(B[o, i]) for `outer` x `inner` items (row-major, C dense; an item of A
// or B at o * outer stride + i * inner stride, so that attention's [batch, heads, ...] views of
// one projection need no copy) on up to one thread per `parallel_min` multiply-adds. Tasks are
// whole items when there are at least as many as threads, else the blocks of a Grid over each
// item, each by sliced_gemm.
template <typename I, typename T>
void pooled_gemm(void* function, int trans_a, int trans_b, long long outer, long long inner,
                 long long m, long long n, long long k, const T* a, long long lda,
                 long long outer_a, long long inner_a, const T* b, long long ldb,
                 long long outer_b, long long inner_b, T* c, long long parallel_min,
                 long long small_mnk) {
  const long long batch = outer * inner;
  const long long threads = threads_for(double(batch) * m * n * k, parallel_min, 1LL << 62);
  const Grid grid(m, n, batch >= threads ? 1 : (threads + batch - 1) / batch);
  const long long blocks = grid.row_blocks * grid.column_blocks;
  const long long tasks = batch * blocks;
#pragma omp parallel for schedule(static) num_threads(threads) if(threads > 1 && tasks > 1)
  for (long long task = 0; task < tasks; ++task) {
    const long long item = task / blocks, block = task % blocks;
    const long long row = block / grid.column_blocks * grid.rows;
    const long long column = block % grid.column_blocks * grid.columns;
    const long long rows = m - row < grid.rows ? m - row : grid.rows;
    const long long columns = n - column < grid.columns ? n - column : grid.columns;
    const long long o = item / inner, i = item % inner;
    const T* ai = a + o * outer_a + i * inner_a + (trans_a == NO_TRANS ? row * lda : row);
    const T* bi = b + o * outer_b + i * inner_b + (trans_b == NO_TRANS ? column : column * ldb);
    sliced_gemm<I, T>(function, trans_a, trans_b, rows, columns, k, ai, lda, bi, ldb, T(0),
                      c + item * m * n + row * n + column, n, small_mnk);
  }
}
}  // namespace
#define GPUDL_POOLED(NAME, I, T) extern "C" void NAME(void* f, int ta, int tb, long long outer, \
    long long inner, long long m, long long n, long long k, const T* a, long long lda, \
    long long oa, long long ia, const T* b, long long ldb, long long ob, long long ib, T* c, \
    long long parallel_min, long long small_mnk) { \
  pooled_gemm<I, T>(f, ta, tb, outer, inner, m, n, k, a, lda, oa, ia, b, ldb, ob, ib, c, \
                    parallel_min, small_mnk); }
GPUDL_POOLED(gpudl_pooled_gemm_f32_i32, int32_t, float)
GPUDL_POOLED(gpudl_pooled_gemm_f64_i32, int32_t, double)
GPUDL_POOLED(gpudl_pooled_gemm_f32_i64, int64_t, float)
GPUDL_POOLED(gpudl_pooled_gemm_f64_i64, int64_t, double)
extern "C" int gpudl_pool_threads() { return omp_get_max_threads(); }
"""


# OpenBLAS's kernels for these cores multiply small matrices directly, without packing, when
# M*N*K <= 100^3 (its gemm_small_kernel_permit): one thread, OpenBLAS
# 0.3.31 on an AMD EPYC, the [m, 128] @ [128, 512] product took 10.1 us at m = 8, 14.7 us at
# m = 12 and 33.1 us at m = 16. A block of a pooled product is therefore multiplied in column
# slices of a multiple of 32 within that limit where one exists: 2 threads, us, whole block ->
# slices: 32x784x512 (x @ W.T) 232 -> 128, 32x512x512 121 -> 88, 512x32x512 (g.T @ x) 164 -> 85,
# 512x10x512 129 -> 40, 64x128x512 106 -> 56; 896x29x512 215 -> 219 (slices of 64: the one loss
# seen). Slices of a width that is no multiple of 32 ran slower (32x512x512: 40 and 48 columns).
# Else blocks of up to 512 rows go in pieces of 32k rows by 32 columns: 128x784x512 (x @ W.T)
# 779 -> 488, 512x512x512 1785 -> 1312, 512x128x512 673 -> 345; blocks of more rows lost
# (2048x256x512, rows split between 2 threads: 2825 -> 3758), so they stay whole.
SMALL_MATRIX_CORES = frozenset({"skylakex", "cooperlake", "sapphirerapids"})
SMALL_MATRIX_MNK = 100 ** 3


class OpenBlas:
    """NumPy's loaded OpenBLAS: its ``cblas_sgemm``/``cblas_dgemm`` addresses, integer width,
    kernel core and thread-count functions."""

    def __init__(self, path):
        lib = ctypes.CDLL(path)
        for prefix, suffix in _SPELLINGS:
            if hasattr(lib, f"{prefix}cblas_sgemm{suffix}"):
                break
        else:
            raise OSError(f"{path} exports no cblas_sgemm")
        self.path = path
        config = getattr(lib, f"{prefix}openblas_get_config{suffix}")
        config.restype = ctypes.c_char_p
        self.config = config().decode(errors="replace").strip()
        core = getattr(lib, f"{prefix}openblas_get_corename{suffix}")
        core.restype = ctypes.c_char_p
        self.core = core().decode(errors="replace").strip()
        self.ilp64 = "USE64BITINT" in self.config
        self.gemm = {numpy.dtype(numpy.float32): getattr(lib, f"{prefix}cblas_sgemm{suffix}"),
                     numpy.dtype(numpy.float64): getattr(lib, f"{prefix}cblas_dgemm{suffix}")}
        self.set_threads = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
        self.set_threads.argtypes = [ctypes.c_int]
        self.get_threads = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
        self.get_threads.restype = ctypes.c_int


def numpy_openblas_path():
    """Path of the OpenBLAS library NumPy loaded (read from ``/proc/self/maps``), or None when
    NumPy's BLAS is not OpenBLAS, when it is not clear which loaded OpenBLAS is NumPy's, or when the
    platform has no ``/proc``."""
    numpy.ones((2, 2)) @ numpy.ones((2, 2))  # NumPy loads its BLAS with its multiarray module
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split(None, 5)[-1].strip() for line in maps if "/" in line}
    except OSError:
        return None
    found = sorted(p for p in paths if re.search(r"openblas[^/]*\.so", os.path.basename(p)))
    # NumPy's wheels keep it in numpy.libs/ beside numpy/; another package (SciPy) may load its own
    own = [p for p in found if p.startswith(os.path.dirname(numpy.__file__))]
    return (own or found)[0] if len(own) == 1 or len(found) == 1 else None


class PooledGemm:
    """Products through the compiled ``pooled_gemm`` of :data:`_SOURCE`: NumPy's OpenBLAS, set to one
    thread by :meth:`share_threads`, called once per block from gpudl's OpenMP threads."""

    def __init__(self, openblas):
        self.openblas = openblas
        lib = host_compiler.build(host_compiler.OPENMP_SERIAL + _SOURCE, name="pooled-gemm")
        native_kernels._serial_after_fork(lib)  # the same one-thread-after-fork handler as the kernels
        self.entries = {}
        for dtype in (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64)):
            entry = getattr(lib, f"gpudl_pooled_gemm_{entry_suffix(dtype, openblas.ilp64)}")
            entry.restype = None
            entry.argtypes = ([ctypes.c_void_p, ctypes.c_int, ctypes.c_int] + [ctypes.c_longlong] * 5
                              + [ctypes.c_void_p] + [ctypes.c_longlong] * 3
                              + [ctypes.c_void_p] + [ctypes.c_longlong] * 3
                              + [ctypes.c_void_p, ctypes.c_longlong, ctypes.c_longlong])
            self.entries[dtype] = (entry, ctypes.cast(openblas.gemm[dtype], ctypes.c_void_p).value)
        self.threads = lib.gpudl_pool_threads()
        # the products' limit for sliced_gemm: OpenBLAS's small-matrix kernels' where it has them
        self.small_matrix_mnk = SMALL_MATRIX_MNK if openblas.core.lower() in SMALL_MATRIX_CORES else 0
        self.own_count = openblas.get_threads()

    def share_threads(self):
        """Put OpenBLAS on one thread: each OpenMP thread runs its own single-threaded block."""
        self.openblas.set_threads(1)

    def own_threads(self):
        """Give OpenBLAS back the thread count it had before :meth:`share_threads`."""
        self.openblas.set_threads(self.own_count)

    batch_dims = 2  # what multiply takes before the two matrix dimensions

    def multiply(self, a, b, c):
        """``c[...] = a @ b`` for 2-, 3- or 4-D operands (the same batch dimensions) of ``c``'s dtype,
        ``c`` C-contiguous."""
        entry, function = self.entries[c.dtype]
        outer, inner = (a.shape[:-2] + (1, 1))[:2]
        m, k = a.shape[-2:]
        n = b.shape[-1]
        a, trans_a, lda, (outer_a, inner_a) = cblas_operand(a)
        b, trans_b, ldb, (outer_b, inner_b) = cblas_operand(b)
        entry(function, trans_a, trans_b, outer, inner, m, n, k, a.ctypes.data, lda, outer_a, inner_a,
              b.ctypes.data, ldb, outer_b, inner_b, c.ctypes.data, PARALLEL_MIN, self.small_matrix_mnk)


NO_TRANS, TRANS = 111, 112


def entry_suffix(dtype, ilp64):
    """``f32_i32`` ... ``f64_i64``: the dtype and the BLAS's integer width of a compiled entry."""
    return f"f{numpy.dtype(dtype).itemsize * 8}_{'i64' if ilp64 else 'i32'}"


def cblas_operand(x):
    """``(array, transpose flag, leading dimension, (outer, inner) batch strides)`` describing the
    matrices of 2-, 3- or 4-D ``x`` to row-major CBLAS, in elements (the strides of missing batch
    dimensions 0), without a copy when each matrix is C-contiguous or a transposed C-contiguous
    view (row or column stride 1) and the batch strides are non-negative multiples of the item
    size; otherwise of a C-contiguous copy."""
    item = x.itemsize
    rows, cols = x.shape[-2:]
    row, col = x.strides[-2:]
    batch = (x.strides[:-2] + (0, 0))[:2]
    if all(s >= 0 and s % item == 0 for s in batch):
        strides = (batch[0] // item, batch[1] // item)
        if col == item and row >= max(cols, 1) * item and row % item == 0:
            return x, NO_TRANS, row // item, strides
        if row == item and col >= max(rows, 1) * item and col % item == 0:
            return x, TRANS, col // item, strides
    x = numpy.ascontiguousarray(x)
    strides = tuple(s // item for s in x.strides[:-2])
    return x, NO_TRANS, max(cols, 1), (strides + (0, 0))[:2]
