// Shared helpers for the gpudl kernel headers.
//
// Every header is used as the `preamble` of a CuPy ElementwiseKernel/ReductionKernel (CuPy
// prepends cupy/math_constants.h, so CUDART_INF/CUDART_NAN exist), and is also compiled by the
// host C++ compiler in tests/kernels (with a shim for __device__ and CuPy's float16 class).
#ifndef GPUDL_COMMON_CUH
#define GPUDL_COMMON_CUH

// A host loop that sums into `var` vectorises only when allowed to reorder the additions (lanes of
// partial sums): GPUDL_SIMD_SUM(var) before the loop says so to the host compiler's OpenMP; on the
// device (one thread per row, a sequential sum) it is nothing.
#if defined(__CUDACC__) || !defined(_OPENMP)
#define GPUDL_SIMD_SUM(var)
#else
#define GPUDL_PRAGMA(text) _Pragma(#text)
#define GPUDL_SIMD_SUM(var) GPUDL_PRAGMA(omp simd reduction(+ : var))
#endif

namespace gpudl {

// The type arithmetic runs in: float for float16 and float32, double for float64.
// (CuPy's float16 converts to float, so float16 + float is float.)
template <typename T>
using acc_t = decltype(T() + 0.0f);

}  // namespace gpudl

#endif  // GPUDL_COMMON_CUH
