// Masked softmax of attention scores, forward and backward, generic over T in
// {float16, float32, float64}; arithmetic in A = acc_t<T> (float for float16).
//
// The scores q k^T are C-contiguous rows of S keys: row r is query l = r % L of batch entry
// n = r / L (the batch axes flattened). One thread per row, in place: the row is read for its
// maximum and sum and then overwritten, so the [.., L, S] score tensor is the only one there is.
//
// Forward:  z_s = scale x_s, masked (a boolean mask entry false gives -inf, "may not attend"; a
// float mask entry is added), and with causal structure columns s > l are -inf (top-left
// aligned, as torch.ones(L, S).tril()). y_s = exp(z_s - max z) / sum_s exp(z_s - max z).
// A row with every entry -inf gives zeros (PyTorch's scaled_dot_product_attention does so).
// exp(z_s - max z) is stored in the row as T before the division (the row is the only buffer).
//
// Backward: gx_s = scale y_s (gy_s - sum_t gy_t y_t), in place over gy; columns past the causal
// limit are written 0 without being read.
//
// Masks are broadcast over the scores without being expanded: the mask holds mask_mod * mask_rows
// rows of S entries; batch entry n reads mask block (n / mask_div) % mask_mod, and query l reads
// row l of the block when mask_rows == L, else its only row (gpudl.backend.masked_softmax
// .compact_mask computes these numbers from the two shapes).
#ifndef GPUDL_ATTENTION_CUH
#define GPUDL_ATTENTION_CUH
// Needs common.cuh first (gpudl.backend.kernel_specs prepends it to every preamble).

namespace gpudl {

// Number of leading columns row r may attend to under the causal structure (all S without it).
__device__ inline long long attended_columns(long long r, long long L, long long S, bool causal) {
  if (!causal) return S;
  const long long limit = r % L + 1;
  return limit < S ? limit : S;
}

__device__ inline long long mask_row_start(long long r, long long L, long long S, long long mask_div,
                                           long long mask_mod, long long mask_rows) {
  const long long block = (r / L / mask_div) % mask_mod;
  return (block * mask_rows + (mask_rows == 1 ? 0 : r % L)) * S;
}

// A boolean entry says whether the query may attend to the key; any other type is added.
template <typename A> __device__ inline A apply_mask(A z, bool keep) {
  return keep ? z : A(-CUDART_INF);
}
template <typename A, typename M> __device__ inline A apply_mask(A z, M add) { return z + A(add); }

template <typename T, typename Scores, typename Mask>
__device__ inline void masked_softmax_forward(Scores& scores, const Mask& mask, long long r,
                                              long long L, long long S, bool has_mask,
                                              long long mask_div, long long mask_mod,
                                              long long mask_rows, bool causal, double scale) {
  typedef acc_t<T> A;
  const long long start = r * S;
  const long long n = attended_columns(r, L, S, causal);
  const long long m0 = has_mask ? mask_row_start(r, L, S, mask_div, mask_mod, mask_rows) : 0;
  A row_max = A(-CUDART_INF);
  for (long long s = 0; s < n; ++s) {
    A z = A(scores[start + s]) * A(scale);
    if (has_mask) z = apply_mask(z, mask[m0 + s]);
    row_max = (z > row_max || isnan(z)) ? z : row_max;  // NaN propagates, as NumPy's max
  }
  if (row_max == A(-CUDART_INF)) {  // nothing to attend to
    for (long long s = 0; s < S; ++s) scores[start + s] = T(0);
    return;
  }
  A sum = A(0);
  if (has_mask) {  // two loops, so that neither tests has_mask per element and both vectorise
    GPUDL_SIMD_SUM(sum)
    for (long long s = 0; s < n; ++s) {
      const A e = exp(apply_mask(A(scores[start + s]) * A(scale), mask[m0 + s]) - row_max);
      sum += e;
      scores[start + s] = T(e);
    }
  } else {
    GPUDL_SIMD_SUM(sum)
    for (long long s = 0; s < n; ++s) {
      const A e = exp(A(scores[start + s]) * A(scale) - row_max);
      sum += e;
      scores[start + s] = T(e);
    }
  }
  for (long long s = 0; s < n; ++s) scores[start + s] = T(A(scores[start + s]) / sum);
  for (long long s = n; s < S; ++s) scores[start + s] = T(0);
}

template <typename T, typename Probs, typename Grad>
__device__ inline void masked_softmax_backward(const Probs& probs, Grad& grad, long long r,
                                               long long L, long long S, bool causal,
                                               double scale) {
  typedef acc_t<T> A;
  const long long start = r * S;
  const long long n = attended_columns(r, L, S, causal);
  A dot = A(0);
  for (long long s = 0; s < n; ++s) dot += A(probs[start + s]) * A(grad[start + s]);
  for (long long s = 0; s < n; ++s) {
    grad[start + s] = T(A(scale) * (A(probs[start + s]) * (A(grad[start + s]) - dot)));
  }
  for (long long s = n; s < S; ++s) grad[start + s] = T(0);
}

}  // namespace gpudl

#endif  // GPUDL_ATTENTION_CUH
