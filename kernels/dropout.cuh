// Dropout with a counter-based hash: no mask array is stored; backward recomputes it.
//
// For element i (the flat C-order index of the element in the array), with 64-bit unsigned
// wrap-around arithmetic:
//   splitmix64(z) = { z += 0x9E3779B97F4A7C15;
//                     z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
//                     z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
//                     return z ^ (z >> 31); }
//   h    = splitmix64(splitmix64(splitmix64(seed) ^ step) ^ i)
//   u    = (h >> 11) * 2^-53                    (a double in [0, 1), exact)
//   keep = u >= p
//   y    = keep ? x / (1 - p) : 0               (in acc_t<T>, 1 - p computed in double)
// gpudl.backend.fused_numpy reproduces this bit for bit with uint64 arrays.
#ifndef GPUDL_DROPOUT_CUH
#define GPUDL_DROPOUT_CUH
// Needs common.cuh first (gpudl.backend.kernel_specs prepends it to every preamble).

namespace gpudl {

__device__ inline unsigned long long splitmix64(unsigned long long z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

__device__ inline bool dropout_keep(unsigned long long seed, unsigned long long step,
                                    unsigned long long i, double p) {
  const unsigned long long h = splitmix64(splitmix64(splitmix64(seed) ^ step) ^ i);
  const double u = (double)(h >> 11) * 1.1102230246251565404e-16;  // 2^-53
  return u >= p;
}

// Forward (x -> y) and backward (gy -> gx) are the same map.
template <typename T>
__device__ inline T dropout(T x, unsigned long long seed, unsigned long long step,
                            unsigned long long i, double p) {
  typedef acc_t<T> A;
  return dropout_keep(seed, step, i, p) ? T(A(x) / A(1.0 - p)) : T(0);
}

}  // namespace gpudl

#endif  // GPUDL_DROPOUT_CUH
