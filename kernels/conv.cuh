// The non-GEMM work of a 2-D convolution (gpudl/ops/conv.py), generic over T in
// {float16, float32, float64}: im2col, which lays the input's windows out as GEMM columns, and
// col2im, which sums the columns' gradient back onto the input.
//
// Layouts. The input x is C-contiguous [C, H, W, N] (batch-last: gpudl.backend.conv_kernels
// copies other layouts, such as a first layer's NCHW data, which costs less than gathering
// along N with a stride). The columns are C-contiguous
// [C, KH, KW, OH, OW, N] (with groups the channels of a group are adjacent rows, so the GEMM of
// group g reads a contiguous block). The input gradient gx is C-contiguous [C, H, W, N].
//
// Geometry as PyTorch's: output (oh, ow) reads tap (ki, kj) at input row oh*stride_h - pad_top +
// ki*dil_h and column ow*stride_w - pad_left + kj*dil_w; a tap outside the input reads zero
// (the padding is a bounds test here, never a padded copy).
//
// Each index i covers `run` consecutive elements of the output array (run divides N, or is a
// multiple of N dividing OW*N for im2col and W*N for col2im, so a run never leaves one output
// row): the GPU launches run = 1 (one thread per element, neighbouring threads on neighbouring
// addresses), the host runs of several window positions, so that the index arithmetic happens
// once per run, the bounds test once per position and the inner loop over N is a contiguous
// copy or sum the compiler vectorises.
//
// col2im is a gather: each element of gx sums, in the fixed order (ki, kj), the column entries
// of the taps that read it (in A = acc_t<T>, rounded once), and is written once; no zeroing, no
// atomics, no read-modify-write of gx.
#ifndef GPUDL_CONV_CUH
#define GPUDL_CONV_CUH
// Needs common.cuh first (gpudl.backend.kernel_specs prepends it to every preamble).

// The host's col2im sums a run in chunks of this many accumulators (AVX-512: 4 registers of
// floats), so that each tap's entries are added by a few long vector loops.
#define CONV_COL2IM_CHUNK 64

namespace gpudl {

// im2col of the `run` column entries from flat index `start` on (a run never leaves one output
// row: the host's blocked convolution, gpudl/backend/native_conv.py, calls this directly).
template <typename T, typename X, typename Cols>
__device__ inline void im2col_run(const X& x, long long start, long long run, long long N,
                                  long long H, long long W, long long KH, long long KW,
                                  long long OH, long long OW, long long stride_h,
                                  long long stride_w, long long pad_top, long long pad_left,
                                  long long dil_h, long long dil_w, Cols& cols) {
  long long n = start % N;
  long long r = start / N;
  long long ow = r % OW;
  r /= OW;
  const long long oh = r % OH;
  r /= OH;
  const long long kj = r % KW;
  r /= KW;
  const long long ki = r % KH;
  const long long c = r / KH;
  const long long ih = oh * stride_h - pad_top + ki * dil_h;
  const bool row_inside = ih >= 0 && ih < H;
  for (long long done = 0; done < run; ++ow, n = 0) {  // one window position (oh, ow) per pass
    const long long len = N - n < run - done ? N - n : run - done;
    const long long iw = ow * stride_w - pad_left + kj * dil_w;
    const long long to = start + done;
    if (!row_inside || iw < 0 || iw >= W) {
      for (long long k = 0; k < len; ++k) cols[to + k] = T(0);
    } else {
      const long long from = ((c * H + ih) * W + iw) * N + n;
      for (long long k = 0; k < len; ++k) cols[to + k] = x[from + k];
    }
    done += len;
  }
}

template <typename T, typename X, typename Cols>
__device__ inline void im2col(const X& x, long long i, long long run, long long N, long long H,
                              long long W, long long KH, long long KW, long long OH,
                              long long OW, long long stride_h, long long stride_w,
                              long long pad_top, long long pad_left, long long dil_h,
                              long long dil_w, Cols& cols) {
  im2col_run<T>(x, i * run, run, N, H, W, KH, KW, OH, OW, stride_h, stride_w, pad_top, pad_left,
                dil_h, dil_w, cols);
}

// Index of output position o along one axis read by tap k at input position p, or -1 if none.
__device__ inline long long conv_tap_output(long long p, long long k, long long pad,
                                            long long dil, long long stride, long long out) {
  const long long t = p + pad - k * dil;
  if (stride == 1) return t >= 0 && t < out ? t : -1;  // no division in the common case
  if (t < 0 || t % stride != 0) return -1;
  const long long o = t / stride;
  return o < out ? o : -1;
}

// Calls visit(ki, kj, oh, ow) for every tap (ki, kj), in row-major order, of the windows that
// read input position (h, w), with the output position (oh, ow) of that window.
template <typename Visit>
__device__ inline void conv_for_each_tap(long long h, long long w, long long KH, long long KW,
                                         long long OH, long long OW, long long stride_h,
                                         long long stride_w, long long pad_top, long long pad_left,
                                         long long dil_h, long long dil_w, Visit visit) {
  for (long long ki = 0; ki < KH; ++ki) {
    const long long oh = conv_tap_output(h, ki, pad_top, dil_h, stride_h, OH);
    if (oh < 0) continue;
    for (long long kj = 0; kj < KW; ++kj) {
      const long long ow = conv_tap_output(w, kj, pad_left, dil_w, stride_w, OW);
      if (ow >= 0) visit(ki, kj, oh, ow);
    }
  }
}

// col2im over the run at `start`, summing CHUNK elements at a time in registers (or L1).
template <typename T, int CHUNK, typename Cols, typename Gx>
__device__ inline void col2im_run(const Cols& gcols, long long start, long long run, long long N,
                                  long long H, long long W, long long KH, long long KW,
                                  long long OH, long long OW, long long stride_h,
                                  long long stride_w, long long pad_top, long long pad_left,
                                  long long dil_h, long long dil_w, Gx& gx) {
  typedef acc_t<T> A;
  long long n = start % N;
  long long r = start / N;
  long long w = r % W;
  r /= W;
  const long long h = r % H;
  const long long c = r / H;
  for (long long done = 0; done < run; ++w, n = 0) {  // one input position (h, w) per pass
    const long long len = N - n < run - done ? N - n : run - done;
    for (long long k0 = 0; k0 < len; k0 += CHUNK) {
      const long long m = len - k0 < CHUNK ? len - k0 : CHUNK;
      A acc[CHUNK];
      for (long long k = 0; k < m; ++k) acc[k] = A(0);
      conv_for_each_tap(h, w, KH, KW, OH, OW, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                        [&](long long ki, long long kj, long long oh, long long ow) {
        const long long from = ((((c * KH + ki) * KW + kj) * OH + oh) * OW + ow) * N + n + k0;
        for (long long k = 0; k < m; ++k) acc[k] += A(gcols[from + k]);
      });
      for (long long k = 0; k < m; ++k) gx[start + done + k0 + k] = T(acc[k]);
    }
    done += len;
  }
}

template <typename T, typename Cols, typename Gx>
__device__ inline void col2im(const Cols& gcols, long long i, long long run, long long N,
                              long long H, long long W, long long KH, long long KW, long long OH,
                              long long OW, long long stride_h, long long stride_w,
                              long long pad_top, long long pad_left, long long dil_h,
                              long long dil_w, Gx& gx) {
  if (run == 1) {  // the GPU's one element per thread: a scalar sum
    col2im_run<T, 1>(gcols, i, 1, N, H, W, KH, KW, OH, OW, stride_h, stride_w, pad_top,
                     pad_left, dil_h, dil_w, gx);
  } else {
    col2im_run<T, CONV_COL2IM_CHUNK>(gcols, i * run, run, N, H, W, KH, KW, OH, OW, stride_h,
                                     stride_w, pad_top, pad_left, dil_h, dil_w, gx);
  }
}

}  // namespace gpudl

#endif  // GPUDL_CONV_CUH
