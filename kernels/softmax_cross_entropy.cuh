// Softmax cross-entropy over logits [N, C] (classes last), generic over T in
// {float16, float32, float64}; A is the accumulate type (float for float16).
//
// Forward, three steps (gpudl.backend.fused_cupy):
//   1. m[r]   = max_c x[r, c]                               (array-module reduction)
//   2. s[r]   = sum_c exp(x[r, c] - lse_shift(m[r]))         (ReductionKernel, A)
//   3. lse[r] = lse_shift(m[r]) + log(s[r]);  loss[r] = softmax_cross_entropy_loss(...)
// The shift is the row max unless it is +-inf or NaN (as torch.logsumexp): then 0, so a row of
// all -inf gives lse = -inf and a row holding +inf gives lse = +inf instead of NaN.
//
// Label smoothing eps (PyTorch): loss = (1 - eps) (lse - x_t) + eps (lse - mean_c x_c).
// Backward per element, from the flat index (class c = i % C), with no one-hot array:
//   gx = gloss * (softmax - eps / C - (c == t ? 1 - eps : 0)),  0 for ignored rows.
#ifndef GPUDL_SOFTMAX_CROSS_ENTROPY_CUH
#define GPUDL_SOFTMAX_CROSS_ENTROPY_CUH
// Needs common.cuh first (gpudl.backend.kernel_specs prepends it to every preamble).

namespace gpudl {

template <typename A> __device__ inline A lse_shift(A m) { return isfinite(m) ? m : A(0); }

template <typename A> __device__ inline A log_sum_exp(A m, A sum_exp) {
  return lse_shift(m) + log(sum_exp);
}

// True when target t is neither a class in [0, C) nor ignore_index.
template <typename S>
__device__ inline bool class_index_invalid(S t, long long C, long long ignore_index) {
  const long long tt = (long long)t;
  return tt != ignore_index && (tt < 0 || tt >= C);
}

// Per-sample loss. `logits` is anything indexable by a flat element index (CuPy's raw CArray on
// the device, a plain pointer on the host); the row starts at row_start. An out-of-range target
// (reported separately by the class-index check) yields NaN rather than reading out of bounds.
template <typename Logits, typename A>
__device__ inline A softmax_cross_entropy_loss(const Logits& logits, long long row_start,
                                               long long C, long long t, A lse,
                                               long long ignore_index, double label_smoothing) {
  if (t == ignore_index) return A(0);
  if (t < 0 || t >= C) return A(CUDART_NAN);
  const A nll = lse - A(logits[row_start + t]);
  if (label_smoothing == 0.0) return nll;
  A sum = A(0);
  for (long long c = 0; c < C; ++c) sum += A(logits[row_start + c]);
  const A smooth = lse - sum / A(C);
  return A(1.0 - label_smoothing) * nll + A(label_smoothing) * smooth;
}

template <typename T, typename A>
__device__ inline T softmax_cross_entropy_backward(T x, long long c, long long t, A lse, T gloss,
                                                   long long C, long long ignore_index,
                                                   double label_smoothing) {
  if (t == ignore_index) return T(0);
  A g = exp(A(x) - lse) - A(label_smoothing / double(C));
  if (c == t) g = g - A(1.0 - label_smoothing);
  return T(A(gloss) * g);
}

}  // namespace gpudl

#endif  // GPUDL_SOFTMAX_CROSS_ENTROPY_CUH
