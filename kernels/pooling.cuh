// Max pooling over 2-D windows (gpudl/ops/pooling.py), forward and backward, generic over T in
// {float16, float32, float64} and the index type I (int8 when a window has fewer than 128 taps,
// else int32).
//
// Layouts and geometry as in conv.cuh (whose conv_for_each_tap this uses): the input x and its
// gradient gx are C-contiguous [C, H, W, N] (batch-last), the output y, the winning taps `index`
// and the output gradient gy C-contiguous [C, OH, OW, N]. Output (oh, ow) reads tap (ki, kj) at
// input row oh*stride_h - pad_top + ki*dil_h and column ow*stride_w - pad_left + kj*dil_w; a tap
// in the padding is skipped (never a candidate). Each index i covers up to `run` consecutive
// elements along N of one window position (1 on the GPU; on the host a run of up to 64, which the
// compiler vectorises: the last run of a position takes what is left of N).
//
// Forward, PyTorch's semantics: the taps of a window are visited in row-major order k = ki*KW + kj;
// the first tap inside the input is taken, then a tap replaces the maximum when it is greater or
// NaN. So the first of tied maxima wins, the last NaN of a window wins (NaN propagates, and its
// tap is recorded), and a window of -inf records its first real tap.
//
// Backward is a gather over the windows that cover each element of gx: the sum, in tap order
// (ki, kj), of the gy of the windows whose recorded tap is the one reading this element, each
// addition in A = acc_t<T> rounded to T (as PyTorch sums into the gradient of its dtype). An index
// owns its elements of gx (no atomics, deterministic, one write per element on the GPU); without
// overlap (stride >= window extent) an element is its window's gy or 0.
#ifndef GPUDL_POOLING_CUH
#define GPUDL_POOLING_CUH
// Needs common.cuh and conv.cuh first (gpudl.backend.kernel_specs builds the preamble).

// On the host the run loops are `omp simd` with 16 lanes: without it GCC vectorises them only for
// runs of 32 or more (int8 taps set its vector length) and runs scalar, branchy code below that.
#if defined(__CUDACC__) || !defined(_OPENMP)
#define POOL_SIMD
#else
#define POOL_SIMD _Pragma("omp simd simdlen(16)")
#endif

namespace gpudl {

// Folds tap k (input elements x[e], e < len) into the running maxima best[e] and their taps
// arg[e] (KEEP_INDEX): the window's first real tap is copied, a later one taken where greater or
// NaN. Bitwise | and selects, no branches (KEEP_INDEX is a template argument, `first` is tested
// outside the loops) and pointers that do not alias: GCC then turns the loops into vector compares
// and blends (measured: with `first |` inside the compare, or a run-time keep_index, it emitted a
// scalar loop with a branch per element, 10x slower).
template <bool KEEP_INDEX, typename A, typename X, typename B, typename G>
__device__ inline void max_pool_take(const X* __restrict__ x, B* __restrict__ best,
                                     G* __restrict__ arg, long long len, int k, bool first) {
  if (first) {
    POOL_SIMD
    for (long long e = 0; e < len; ++e) {
      best[e] = x[e];
      if (KEEP_INDEX) arg[e] = k;
    }
    return;
  }
  POOL_SIMD
  for (long long e = 0; e < len; ++e) {
    const A v = A(x[e]);
    const A b = A(best[e]);
    const bool take = (v > b) | (v != v);
    best[e] = take ? v : b;
    if (KEEP_INDEX) arg[e] = take ? k : int(arg[e]);
  }
}

// Index i's first element of a C-contiguous [C, H, W, N] array (each position split in runs of
// `run` along N), as (c, h, w, n0), and its run's length `len`.
__device__ inline long long pool_position(long long i, long long run, long long N, long long H,
                                          long long W, long long& c, long long& h, long long& w,
                                          long long& n0, long long& len) {
  const long long runs = (N + run - 1) / run;
  long long r = i / runs;
  n0 = (i % runs) * run;
  len = N - n0 < run ? N - n0 : run;
  const long long start = r * N + n0;
  w = r % W;
  r /= W;
  h = r % H;
  c = r / H;
  return start;
}

// Adds to acc[e] (e < len; to 0 for the `first` covering window) the gradients gy[e] of the
// windows whose recorded tap index[e] is k, in A and rounded to the accumulator's type T.
template <typename A, typename T, typename G, typename I>
__device__ inline void max_pool_gather(const G* __restrict__ gy, const I* __restrict__ index,
                                       T* __restrict__ acc, long long len, int k, bool first) {
  if (first) {  // no zeroing pass and no read of acc
    POOL_SIMD
    for (long long e = 0; e < len; ++e) acc[e] = T(A(0) + (int(index[e]) == k ? A(gy[e]) : A(0)));
    return;
  }
  POOL_SIMD
  for (long long e = 0; e < len; ++e) {
    acc[e] = T(A(acc[e]) + (int(index[e]) == k ? A(gy[e]) : A(0)));
  }
}

// Folds every tap inside the input of the windows at rows h0.. and columns w0.. of channel c
// (elements n0 .. n0 + len - 1 along N) into best and arg, in row-major tap order.
template <bool KEEP_INDEX, typename A, typename X, typename B, typename G>
__device__ inline void max_pool_window(const X& x, long long c, long long h0, long long w0,
                                       long long n0, long long N, long long H, long long W,
                                       long long KH, long long KW, long long dil_h,
                                       long long dil_w, B* best, G* arg, long long len) {
  bool first = true;
  for (long long ki = 0; ki < KH; ++ki) {
    const long long ih = h0 + ki * dil_h;
    if (ih < 0 || ih >= H) continue;
    for (long long kj = 0; kj < KW; ++kj) {
      const long long iw = w0 + kj * dil_w;
      if (iw < 0 || iw >= W) continue;
      max_pool_take<KEEP_INDEX, A>(&x[((c * H + ih) * W + iw) * N + n0], best, arg, len,
                                   int(ki * KW + kj), first);
      first = false;
    }
  }
}

// The running maximum and tap live in registers for a run of 1 (the GPU's launch), and in the
// output rows y and index for longer runs (the host's: the compiler vectorises loops over rows in
// memory, not over small local arrays). A window always has a tap inside the input (padding is
// at most half the window).
template <typename T, typename I, typename X, typename Y, typename Idx>
__device__ inline void max_pool2d_forward(const X& x, long long i, long long run, long long N,
                                          long long H, long long W, long long KH, long long KW,
                                          long long OH, long long OW, long long stride_h,
                                          long long stride_w, long long pad_top,
                                          long long pad_left, long long dil_h, long long dil_w,
                                          bool keep_index, Y& y, Idx& index) {
  typedef acc_t<T> A;
  long long c, oh, ow, n0, len;
  const long long start = pool_position(i, run, N, OH, OW, c, oh, ow, n0, len);
  const long long h0 = oh * stride_h - pad_top;
  const long long w0 = ow * stride_w - pad_left;
  if (run == 1) {
    A best[1];
    int arg[1];
    max_pool_window<true, A>(x, c, h0, w0, n0, N, H, W, KH, KW, dil_h, dil_w, best, arg, 1);
    y[start] = T(best[0]);
    if (keep_index) index[start] = I(arg[0]);
  } else if (keep_index) {
    max_pool_window<true, A>(x, c, h0, w0, n0, N, H, W, KH, KW, dil_h, dil_w, &y[start],
                             &index[start], len);
  } else {  // index is a 1-element dummy
    max_pool_window<false, A>(x, c, h0, w0, n0, N, H, W, KH, KW, dil_h, dil_w, &y[start],
                              &index[0], len);
  }
}

// Input gradients summed in T, tap by tap, in a register for a run of 1 and in the rows of gx
// for longer runs (as the forward).
template <typename T, typename G, typename Idx, typename Gx>
__device__ inline void max_pool2d_backward(const G& gy, const Idx& index, long long i,
                                           long long run, long long N, long long H, long long W,
                                           long long KH, long long KW, long long OH, long long OW,
                                           long long stride_h, long long stride_w,
                                           long long pad_top, long long pad_left, long long dil_h,
                                           long long dil_w, Gx& gx) {
  typedef acc_t<T> A;
  long long c, h, w, n0, len;
  const long long start = pool_position(i, run, N, H, W, c, h, w, n0, len);
  T acc[1];
  T* const sum = run == 1 ? acc : &gx[start];
  bool first = true;
  conv_for_each_tap(h, w, KH, KW, OH, OW, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                    [&](long long ki, long long kj, long long oh, long long ow) {
    const long long from = ((c * OH + oh) * OW + ow) * N + n0;
    max_pool_gather<A>(&gy[from], &index[from], sum, len, int(ki * KW + kj), first);
    first = false;
  });
  if (first) {  // no window covers these elements
    for (long long e = 0; e < len; ++e) sum[e] = T(0);
  }
  if (run == 1) gx[start] = acc[0];
}

}  // namespace gpudl

#endif  // GPUDL_POOLING_CUH
