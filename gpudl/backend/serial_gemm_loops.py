"""The Python side that the host loops issuing their own single-threaded BLAS products share
(``native_recurrence``, ``native_conv``; their C++ side starts from ``openblas_pool.GEMM_PREAMBLE``,
their entries are named by ``openblas_pool.entry_suffix``): the dtypes they serve, the check of the
arrays they are given, and one runner per dtype and BLAS."""
import functools
import math

import numpy

from . import blas

C_TYPES = {numpy.dtype(numpy.float32): "float", numpy.dtype(numpy.float64): "double"}


def data_pointer(op, array, dtype):
    """``array``'s data address, after checking that it is C-contiguous and of ``dtype`` (the loops
    index it as such): ValueError naming ``op`` otherwise."""
    if array.dtype != dtype or not array.flags.c_contiguous:
        raise ValueError(f"{op}: expected a C-contiguous {dtype} array, got {array.dtype} with strides "
                         f"{array.strides}")
    return array.ctypes.data


def runner(runner_class, dtype, weight_shape, max_weight_bytes):
    """``runner_class(dtype, gemm)`` (built once per dtype and BLAS) with the BLAS's
    ``blas.single_thread_gemm``, or None where the loops do not serve: dtypes other than float32
    and float64, weights of ``weight_shape`` over ``max_weight_bytes``, or a BLAS that keeps threads
    of its own."""
    dtype = numpy.dtype(dtype)
    if dtype not in C_TYPES or math.prod(weight_shape) * dtype.itemsize > max_weight_bytes:
        return None
    gemm = blas.single_thread_gemm(dtype)
    return None if gemm is None else _cached(runner_class, dtype, gemm)


@functools.cache
def _cached(runner_class, dtype, gemm):
    return runner_class(dtype, gemm)
