// Layer normalisation over the rows of a C-contiguous [R, D] array (the normalized dimensions
// flattened into D), forward and backward, generic over T in {float16, float32, float64};
// arithmetic and the saved statistics in A = acc_t<T> (float for float16). Forward: one thread
// per row.
//
// Forward (PyTorch's F.layer_norm): mean = sum_s x_s / D, var = sum_s (x_s - mean)^2 / D (biased,
// two passes over the row: no cancellation between sum x^2 and mean^2), rstd = 1 / sqrt(var + eps),
// y_s = (x_s - mean) rstd w_s + b_s, the affine parts only when has_weight / has_bias. mean and
// rstd are written per row for backward.
//
// Backward for row r, with xhat_s = (x_s - mean) rstd and g_s = gy_s w_s (gy_s without weight):
//   gx_s = rstd (g_s - sum_t g_t / D - xhat_s sum_t g_t xhat_t / D).
// One thread per block of rows_per_block rows (the host runs 64, the GPU 1 while the partial sums
// stay small: gpudl.backend.layer_norm_kernels);
// with param_grads it also writes the block's column sums of gy xhat and gy (partial weight and
// bias gradients), which the caller adds over the blocks: a fixed order, no atomics.
//
// Sums over a row run in interleaved partial sums ("lanes", added pairwise in a fixed order): the
// host compiler turns them into vector adds without being allowed to reassociate (no fast-math),
// and on the device they are independent registers. 8 lanes for the forward's sums, 16 for the
// backward's two at once: the fastest on the AVX-512 host (float32, D = 64: 26 and 46 ns a row;
// 16 lanes forward took 40 ns, 8 backward 66 ns).
#ifndef GPUDL_LAYER_NORM_CUH
#define GPUDL_LAYER_NORM_CUH
// Needs common.cuh first (gpudl.backend.kernel_specs prepends it to every preamble).

#define LAYER_NORM_FORWARD_LANES 8
#define LAYER_NORM_BACKWARD_LANES 16

namespace gpudl {

// The lanes' sum, added pairwise.
template <int LANES, typename A> __device__ inline A layer_norm_lane_sum(A* part) {
  for (int width = LANES / 2; width > 0; width /= 2) {
    for (int k = 0; k < width; ++k) part[k] += part[k + width];
  }
  return part[0];
}

// sum_s x_s and then sum_s (x_s - mean)^2 over the row at start; returns mean, sets var.
template <typename A, typename X>
__device__ inline A layer_norm_moments(const X x, long long start, long long D, A& var) {
  A part[LAYER_NORM_FORWARD_LANES];
  for (int k = 0; k < LAYER_NORM_FORWARD_LANES; ++k) part[k] = A(0);
  long long s = 0;
  for (; s + LAYER_NORM_FORWARD_LANES <= D; s += LAYER_NORM_FORWARD_LANES) {
    for (int k = 0; k < LAYER_NORM_FORWARD_LANES; ++k) part[k] += A(x[start + s + k]);
  }
  for (int k = 0; s + k < D; ++k) part[k] += A(x[start + s + k]);
  const A mean = layer_norm_lane_sum<LAYER_NORM_FORWARD_LANES>(part) / A(D);
  for (int k = 0; k < LAYER_NORM_FORWARD_LANES; ++k) part[k] = A(0);
  for (s = 0; s + LAYER_NORM_FORWARD_LANES <= D; s += LAYER_NORM_FORWARD_LANES) {
    for (int k = 0; k < LAYER_NORM_FORWARD_LANES; ++k) {
      const A d = A(x[start + s + k]) - mean;
      part[k] += d * d;
    }
  }
  for (int k = 0; s + k < D; ++k) {
    const A d = A(x[start + s + k]) - mean;
    part[k] += d * d;
  }
  var = layer_norm_lane_sum<LAYER_NORM_FORWARD_LANES>(part) / A(D);
  return mean;
}

template <typename T, typename X, typename P, typename Y, typename S>
__device__ inline void layer_norm_forward(const X x, const P weight, const P bias,
                                          bool has_weight, bool has_bias, long long r,
                                          long long D, double eps, Y y, S mean_out,
                                          S rstd_out) {
  typedef acc_t<T> A;
  const long long start = r * D;
  A var;
  const A mean = layer_norm_moments<A>(x, start, D, var);
  const A rstd = A(1) / sqrt(var + A(eps));
  mean_out[r] = mean;
  rstd_out[r] = rstd;
  for (long long s = 0; s < D; ++s) {
    A v = (A(x[start + s]) - mean) * rstd;
    if (has_weight) v = v * A(weight[s]);
    if (has_bias) v = v + A(bias[s]);
    y[start + s] = T(v);
  }
}

// Adds row element s's terms of the backward's two sums: g_s and g_s xhat_s.
template <typename A, typename X, typename GY, typename P>
__device__ inline void layer_norm_grad_terms(const X x, const GY gy, const P weight,
                                             bool has_weight, long long start, long long s,
                                             A mean, A rstd, A& sum_g, A& sum_gxhat) {
  const A g = has_weight ? A(gy[start + s]) * A(weight[s]) : A(gy[start + s]);
  sum_g += g;
  sum_gxhat += g * ((A(x[start + s]) - mean) * rstd);
}

// Backward of row r: writes gx's row; with param_grads adds the row's gy xhat and gy into the
// partial column sums gw_part[0..D) and gb_part[0..D) (offsets into the caller's arrays).
template <typename T, typename X, typename GY, typename P, typename S, typename G, typename Q>
__device__ inline void layer_norm_backward_row(const X x, const GY gy, const P weight,
                                               const S mean_in, const S rstd_in, bool has_weight,
                                               bool param_grads, long long r, long long D, G gx,
                                               Q gw_part, Q gb_part, long long part) {
  typedef acc_t<T> A;
  const long long start = r * D;
  const A mean = A(mean_in[r]);
  const A rstd = A(rstd_in[r]);
  A sum_g[LAYER_NORM_BACKWARD_LANES], sum_gxhat[LAYER_NORM_BACKWARD_LANES];
  for (int k = 0; k < LAYER_NORM_BACKWARD_LANES; ++k) sum_g[k] = sum_gxhat[k] = A(0);
  long long s = 0;
  for (; s + LAYER_NORM_BACKWARD_LANES <= D; s += LAYER_NORM_BACKWARD_LANES) {
    for (int k = 0; k < LAYER_NORM_BACKWARD_LANES; ++k) {
      layer_norm_grad_terms(x, gy, weight, has_weight, start, s + k, mean, rstd, sum_g[k],
                            sum_gxhat[k]);
    }
  }
  for (int k = 0; s + k < D; ++k) {
    layer_norm_grad_terms(x, gy, weight, has_weight, start, s + k, mean, rstd, sum_g[k],
                          sum_gxhat[k]);
  }
  const A mean_g = layer_norm_lane_sum<LAYER_NORM_BACKWARD_LANES>(sum_g) / A(D);
  const A mean_gxhat = layer_norm_lane_sum<LAYER_NORM_BACKWARD_LANES>(sum_gxhat) / A(D);
  for (s = 0; s < D; ++s) {
    const A xhat = (A(x[start + s]) - mean) * rstd;
    const A g = has_weight ? A(gy[start + s]) * A(weight[s]) : A(gy[start + s]);
    gx[start + s] = T(rstd * (g - mean_g - xhat * mean_gxhat));
  }
  if (!param_grads) return;
  for (s = 0; s < D; ++s) {
    gw_part[part + s] += A(gy[start + s]) * ((A(x[start + s]) - mean) * rstd);
    gb_part[part + s] += A(gy[start + s]);
  }
}

// Backward of block b: rows [b K, min(b K + K, R)) with K = rows_per_block, their partial column
// sums in row b of the [blocks, D] arrays gw_part and gb_part (the caller sums those rows).
template <typename T, typename X, typename GY, typename P, typename S, typename G, typename Q>
__device__ inline void layer_norm_backward(const X x, const GY gy, const P weight,
                                           const S mean_in, const S rstd_in, bool has_weight,
                                           bool param_grads, long long b, long long R,
                                           long long D, long long rows_per_block, G gx,
                                           Q gw_part, Q gb_part) {
  typedef acc_t<T> A;
  const long long part = b * D;
  if (param_grads) {
    for (long long s = 0; s < D; ++s) gw_part[part + s] = gb_part[part + s] = A(0);
  }
  const long long end = (b + 1) * rows_per_block < R ? (b + 1) * rows_per_block : R;
  for (long long r = b * rows_per_block; r < end; ++r) {
    layer_norm_backward_row<T>(x, gy, weight, mean_in, rstd_in, has_weight, param_grads, r, D, gx,
                               gw_part, gb_part, part);
  }
}

}  // namespace gpudl

#endif  // GPUDL_LAYER_NORM_CUH
