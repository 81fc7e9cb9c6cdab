// One-pass, in-place optimizer updates (one thread per parameter element), following PyTorch's
// documented algorithms (torch.optim.SGD, Adam, AdamW). Parameters and states are stored as T;
// arithmetic runs in acc_t<T> (float for float16). Host-side scalars (lr, bias corrections)
// arrive as double.
#ifndef GPUDL_OPTIMIZERS_CUH
#define GPUDL_OPTIMIZERS_CUH
// Needs common.cuh first (gpudl.backend.kernel_specs prepends it to every preamble).

namespace gpudl {

// SGD without momentum: g = grad + wd * p;  p -= lr * g.
template <typename T>
__device__ inline void sgd_step(T& param, T grad, double lr, double weight_decay) {
  typedef acc_t<T> A;
  const A p = param;
  A g = grad;
  if (weight_decay != 0.0) g = g + A(weight_decay) * p;
  param = T(p - A(lr) * g);
}

// SGD with momentum: g = grad + wd * p;
// buf = first_step ? g : momentum * buf + (1 - dampening) * g;
// g = nesterov ? g + momentum * buf : buf;  p -= lr * g.
template <typename T>
__device__ inline void sgd_momentum_step(T& param, T& momentum_buffer, T grad, double lr,
                                         double momentum, double dampening, double weight_decay,
                                         bool nesterov, bool first_step) {
  typedef acc_t<T> A;
  const A p = param;
  A g = grad;
  if (weight_decay != 0.0) g = g + A(weight_decay) * p;
  const A buf = first_step ? g : A(momentum) * A(momentum_buffer) + A(1.0 - dampening) * g;
  momentum_buffer = T(buf);
  g = nesterov ? g + A(momentum) * buf : buf;
  param = T(p - A(lr) * g);
}

// Adam / AdamW. Host scalars: step_size = lr / (1 - beta1^t),
// bias_correction2_sqrt = sqrt(1 - beta2^t). decoupled (AdamW): p *= 1 - lr * wd first;
// otherwise g += wd * p. Then m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
// [amsgrad: vmax = max(vmax, v), v := vmax]; denom = sqrt(v) / bias_correction2_sqrt + eps;
// p -= step_size * (m / denom).
// Shared part of both Adam variants: weight decay, then the two moment updates (stored as T;
// the unrounded values m and v are returned for the parameter step).
template <typename T>
__device__ inline void adam_moments(T param, T grad, T& exp_avg, T& exp_avg_sq, double lr,
                                    double beta1, double beta2, double weight_decay,
                                    bool decoupled, acc_t<T>& p, acc_t<T>& m, acc_t<T>& v) {
  typedef acc_t<T> A;
  p = param;
  A g = grad;
  if (weight_decay != 0.0) {
    if (decoupled) p = p * A(1.0 - lr * weight_decay);
    else g = g + A(weight_decay) * p;
  }
  m = A(beta1) * A(exp_avg) + A(1.0 - beta1) * g;
  v = A(beta2) * A(exp_avg_sq) + A(1.0 - beta2) * (g * g);
  exp_avg = T(m);
  exp_avg_sq = T(v);
}

template <typename T>
__device__ inline void adam_step(T& param, T grad, T& exp_avg, T& exp_avg_sq, double lr,
                                 double beta1, double beta2, double eps, double weight_decay,
                                 bool decoupled, double step_size, double bias_correction2_sqrt) {
  typedef acc_t<T> A;
  A p, m, v;
  adam_moments(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, weight_decay, decoupled,
               p, m, v);
  const A denom = sqrt(v) / A(bias_correction2_sqrt) + A(eps);
  param = T(p - A(step_size) * (m / denom));
}

// AMSGrad: vmax = maximum(vmax, v) (NaN propagates, as numpy.maximum/torch.maximum).
template <typename T>
__device__ inline void adam_amsgrad_step(T& param, T grad, T& exp_avg, T& exp_avg_sq,
                                         T& max_exp_avg_sq, double lr, double beta1, double beta2,
                                         double eps, double weight_decay, bool decoupled,
                                         double step_size, double bias_correction2_sqrt) {
  typedef acc_t<T> A;
  A p, m, v;
  adam_moments(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, weight_decay, decoupled,
               p, m, v);
  const A old_max = max_exp_avg_sq;
  const A vmax = (v != v || old_max < v) ? v : old_max;
  max_exp_avg_sq = T(vmax);
  const A denom = sqrt(vmax) / A(bias_correction2_sqrt) + A(eps);
  param = T(p - A(step_size) * (m / denom));
}

}  // namespace gpudl

#endif  // GPUDL_OPTIMIZERS_CUH
