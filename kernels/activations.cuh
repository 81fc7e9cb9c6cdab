// Activation functions, forward and backward, generic over T in {float16, float32, float64}.
//
// Arithmetic runs in acc_t<T> (float for float16) and rounds to T once, on return.
// Definitions follow PyTorch (aten/src/ATen/native/cpu/Activation.cpp and derivatives.yaml):
//   relu'       uses the output:  gx = gy * (y > 0)             (relu'(0) = 0; a NaN gy stays NaN)
//   leaky_relu' uses the input:   gx = x > 0 ? gy : gy * slope   (leaky_relu'(0) = slope)
//   elu'        uses the input:   gx = x <= 0 ? gy * alpha * exp(x) : gy   (elu'(0) = alpha)
//   softplus    is linear where beta * x > threshold, in forward and backward
//   sigmoid', tanh' use the output; gelu', gelu_tanh', silu' use the input.
// NaN propagates through every forward function (relu keeps x when x != x for that).
#ifndef GPUDL_ACTIVATIONS_CUH
#define GPUDL_ACTIVATIONS_CUH
// Needs common.cuh first (gpudl.backend.kernel_specs prepends it to every preamble).

namespace gpudl {

template <typename T> __device__ inline T relu(T x) { return (x > T(0) || x != x) ? x : T(0); }
template <typename T> __device__ inline T relu_backward(T y, T gy) { return y > T(0) ? gy : T(gy * T(0)); }

template <typename T> __device__ inline T leaky_relu(T x, double negative_slope) {
  typedef acc_t<T> A;
  const A xa = x;
  return T(xa > A(0) ? xa : xa * A(negative_slope));
}
template <typename T> __device__ inline T leaky_relu_backward(T x, T gy, double negative_slope) {
  typedef acc_t<T> A;
  return T(A(x) > A(0) ? A(gy) : A(gy) * A(negative_slope));
}

template <typename T> __device__ inline T elu(T x, double alpha) {
  typedef acc_t<T> A;
  const A xa = x;
  return T(xa <= A(0) ? expm1(xa) * A(alpha) : xa);
}
template <typename T> __device__ inline T elu_backward(T x, T gy, double alpha) {
  typedef acc_t<T> A;
  const A xa = x;
  return T(xa <= A(0) ? A(gy) * A(alpha) * exp(xa) : A(gy));
}

template <typename T> __device__ inline T sigmoid(T x) {
  typedef acc_t<T> A;
  return T(A(1) / (A(1) + exp(-A(x))));
}
template <typename T> __device__ inline T sigmoid_backward(T y, T gy) {
  typedef acc_t<T> A;
  const A ya = y;
  return T(A(gy) * (A(1) - ya) * ya);
}

template <typename T> __device__ inline T tanh_forward(T x) {
  typedef acc_t<T> A;
  return T(tanh(A(x)));
}
template <typename T> __device__ inline T tanh_backward(T y, T gy) {
  typedef acc_t<T> A;
  const A ya = y;
  return T(A(gy) * (A(1) - ya * ya));
}

template <typename T> __device__ inline T softplus(T x, double beta, double threshold) {
  typedef acc_t<T> A;
  const A xa = x;
  const A xb = xa * A(beta);
  return T(xb > A(threshold) ? xa : log1p(exp(xb)) / A(beta));
}
template <typename T>
__device__ inline T softplus_backward(T x, T gy, double beta, double threshold) {
  typedef acc_t<T> A;
  const A xb = A(x) * A(beta);
  const A z = exp(xb);
  return T(xb > A(threshold) ? A(gy) : A(gy) * z / (z + A(1)));
}

// GELU, exact form: x * Phi(x) with Phi the standard normal CDF.
template <typename T> __device__ inline T gelu(T x) {
  typedef acc_t<T> A;
  const A xa = x;
  return T(xa * A(0.5) * (A(1) + erf(xa * A(0.70710678118654752440))));  // 1/sqrt(2)
}
template <typename T> __device__ inline T gelu_backward(T x, T gy) {
  typedef acc_t<T> A;
  const A xa = x;
  const A cdf = A(0.5) * (A(1) + erf(xa * A(0.70710678118654752440)));
  const A pdf = exp(A(-0.5) * xa * xa) * A(0.39894228040143267794);  // 1/sqrt(2*pi)
  return T(A(gy) * (cdf + xa * pdf));
}

// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
template <typename T> __device__ inline T gelu_tanh(T x) {
  typedef acc_t<T> A;
  const A xa = x;
  const A inner = A(0.79788456080286535588) * (xa + A(0.044715) * (xa * xa * xa));
  return T(A(0.5) * xa * (A(1) + tanh(inner)));
}
template <typename T> __device__ inline T gelu_tanh_backward(T x, T gy) {
  typedef acc_t<T> A;
  const A xa = x;
  const A x_sq = xa * xa;
  const A inner = A(0.79788456080286535588) * (xa + A(0.044715) * (x_sq * xa));
  const A tanh_inner = tanh(inner);
  const A left_derivative = A(0.5) * (A(1) + tanh_inner);
  const A inner_derivative = A(0.79788456080286535588) * (A(1) + A(3 * 0.044715) * x_sq);
  const A right_derivative = A(0.5) * xa * (A(1) - tanh_inner * tanh_inner) * inner_derivative;
  return T(A(gy) * (left_derivative + right_derivative));
}

template <typename T> __device__ inline T silu(T x) {
  typedef acc_t<T> A;
  const A xa = x;
  return T(xa / (A(1) + exp(-xa)));
}
template <typename T> __device__ inline T silu_backward(T x, T gy) {
  typedef acc_t<T> A;
  const A xa = x;
  const A s = A(1) / (A(1) + exp(-xa));
  return T(A(gy) * s * (A(1) + xa * (A(1) - s)));
}

}  // namespace gpudl

#endif  // GPUDL_ACTIVATIONS_CUH
