"""Multi-tensor ("foreach") optimizer updates on the host: one call per parameter group.

The per-tensor optimizer kernels of ``kernel_specs`` (``sgd``, ``sgd_momentum``, ``adam``,
``adam_amsgrad``: the device functions of ``kernels/optimizers.cuh``) are generated here a second
time with another host loop: the entry takes a tuple of every tensor's arrays (their
``__array_struct__`` capsules, in the spec's array-parameter order), builds tables of pointers and
of element offsets, and splits the concatenation of all tensors' elements evenly across the
OpenMP threads. So a step over many small tensors costs one call and one parallel region instead
of one per tensor, and each element is computed by the same code as the per-tensor kernel (the
results are bit-identical). Tensors that do not fit (a non-C-contiguous array, or arrays of
differing dtypes) run the per-tensor kernel instead.
"""
import ctypes
import functools

import numpy as np

from . import host_compiler
from .fused_numpy import _check_float
from .kernel_launch import adam_arguments, sgd_arguments, spec_order
from .kernel_specs import KERNELS
from .native_kernels import C_TYPES, _serial_after_fork, dtype_signatures, kernel, parallel_min, parse_params

OPS = ("sgd", "sgd_momentum", "adam", "adam_amsgrad")
_SCALAR_CTYPES = {"float64": ctypes.c_double, "bool": ctypes.c_bool}

# The loop every entry shares. ``spans`` hands ``body`` the pieces of one contiguous range of the
# concatenation, tensor by tensor; thread ranges are rounded to 64 elements so that no two
# threads write one cache line of a tensor.
_RUNTIME = r"""
#include <vector>
extern "C" {
std::intptr_t PyTuple_Size(void* tuple);
void* PyTuple_GetItem(void* tuple, std::intptr_t index);
}
namespace gpudl_foreach {
struct Tables {
  std::vector<void*> data;
  std::vector<long long> offset;
  Tables(void* tuple, int per_tensor) {
    const long long n = PyTuple_Size(tuple) / per_tensor;
    data.resize(n * per_tensor);
    offset.assign(n + 1, 0);
    for (long long t = 0; t < n; ++t) {
      for (int k = 0; k < per_tensor; ++k) {
        auto* a = static_cast<gpudl_host::ArrayInterface*>(
            PyCapsule_GetPointer(PyTuple_GetItem(tuple, t * per_tensor + k), nullptr));
        data[t * per_tensor + k] = a->data;
        if (k == 0) {
          long long size = 1;
          for (int d = 0; d < a->nd; ++d) size *= a->shape[d];
          offset[t + 1] = offset[t] + size;
        }
      }
    }
  }
};
template <typename Body>
inline void spans(const std::vector<long long>& offset, long long begin, long long end, Body& body) {
  long long t = std::upper_bound(offset.begin(), offset.end(), begin) - offset.begin() - 1;
  while (begin < end) {
    const long long stop = std::min(end, offset[t + 1]);
    if (stop > begin) body(t, begin - offset[t], stop - offset[t]);
    begin = stop;
    ++t;
  }
}
template <typename Body>
inline void run(const std::vector<long long>& offset, long long parallel_min, Body body) {
  const long long total = offset.back();
  if (total < parallel_min) {
    spans(offset, 0, total, body);
    return;
  }
  void* thread_state = PyEval_SaveThread();
#pragma omp parallel
  {
    const long long threads = omp_get_num_threads(), id = omp_get_thread_num();
    const long long chunk = ((total + threads - 1) / threads + 63) / 64 * 64;
    const long long begin = std::min(total, id * chunk), end = std::min(total, begin + chunk);
    spans(offset, begin, end, body);
  }
  PyEval_RestoreThread(thread_state);
}
}  // namespace gpudl_foreach
"""


def entry_name(op, index):
    """The C symbol of the multi-tensor entry of kernel ``op`` for its dtype signature ``index``."""
    return f"{KERNELS[op]['name']}__foreach{index}"


def _entry_source(op, index, dtypes, parallel_min):
    """One ``extern "C"`` entry: (tuple of capsules, scalars...) -> the spec's operation applied
    to every element of every tensor."""
    spec = KERNELS[op]
    params = parse_params(spec)
    arrays = [p for p in params if p.is_placeholder]
    scalars = [(p, d[1]) for p, d in zip(params, dtypes) if isinstance(d, tuple)]
    letter = np.dtype(next(d for d in dtypes if not isinstance(d, tuple))).name
    k = len(arrays)
    pointers = " ".join(f"{'const ' if p.is_input else ''}T* _p_{p.name} = "
                        f"static_cast<{'const ' if p.is_input else ''}T*>(_data[_t * {k} + {j}]);"
                        for j, p in enumerate(arrays))
    refs = " ".join(f"{'const ' if p.is_input else ''}T& {p.name} = _p_{p.name}[i];" for p in arrays)
    arguments = ", ".join(["void* _tensors"] + [f"const {C_TYPES[d]} {p.name}" for p, d in scalars])
    return f"""namespace gpudl_foreach_{op}_{index} {{
typedef {C_TYPES[letter]} T;
extern "C" void {entry_name(op, index)}({arguments}) {{
  const gpudl_foreach::Tables _tables(_tensors, {k});
  void* const* _data = _tables.data.data();
  gpudl_foreach::run(_tables.offset, {parallel_min}, [&](long long _t, long long _lo, long long _hi) {{
    {pointers}
    for (long long i = _lo; i < _hi; ++i) {{ {refs} {spec['operation']}; }}
  }});
}}
}}"""


def library_source():
    """C++ of the multi-tensor entries of every op in :data:`OPS`, for each dtype signature the
    per-tensor kernel has in ``kernel_specs.SIGNATURES``."""
    parts = [host_compiler.SHIM, host_compiler.PYTHON_ARRAYS, host_compiler.OPENMP_SERIAL,
             KERNELS[OPS[0]]["preamble"], _RUNTIME]
    for op in OPS:
        parts += [_entry_source(op, index, dtypes, parallel_min(op))
                  for index, dtypes in enumerate(dtype_signatures(op))]
    return "\n".join(parts)


@functools.cache
def _entries():
    """``{op: {dtype: C function}}``, built (cached on disk) and loaded once per process."""
    lib = host_compiler.build(library_source(), name="foreach")
    _serial_after_fork(lib)  # the at-fork handler, should this be the first library with OpenMP loaded
    with_gil = ctypes.PyDLL(lib._name, handle=lib._handle)
    entries = {}
    for op in OPS:
        entries[op] = {}
        for index, dtypes in enumerate(dtype_signatures(op)):
            entry = getattr(with_gil, entry_name(op, index))
            entry.restype = None
            entry.argtypes = [ctypes.py_object] + [_SCALAR_CTYPES[d[1]] for d in dtypes if isinstance(d, tuple)]
            array_dtype = next(np.dtype(d) for d in dtypes if not isinstance(d, tuple))
            entries[op][array_dtype] = entry
    return entries


def launch(op, columns, scalars):
    """Apply kernel ``op`` to every tensor: ``columns`` holds, per array parameter of the spec (in
    its order), one array per tensor; ``scalars`` are the spec's scalar arguments in order.

    Tensors whose arrays are all C-contiguous and of one dtype run in one multi-tensor call per
    dtype; any other runs the per-tensor kernel (same results)."""
    entries = _entries()[op]
    buckets = {}
    for arrays in zip(*columns):
        dtype = arrays[0].dtype
        fits = dtype in entries
        for a in arrays:  # a plain loop: this runs per tensor and step
            if a.dtype != dtype or not a.flags.c_contiguous:
                fits = False
                break
        if fits:
            buckets.setdefault(dtype, []).extend([a.__array_struct__ for a in arrays])
        else:
            kernel(op)(*spec_order(op, arrays, scalars))
    for dtype, capsules in buckets.items():
        entries[dtype](tuple(capsules), *scalars)


def sgd_foreach(params, grads, momentum_buffers, *, lr, momentum=0.0, dampening=0.0, nesterov=False,
                weight_decay=0.0, first_step=False):
    """``fused_numpy.sgd_update`` for lists of tensors (``momentum_buffers`` None without
    momentum), in one multi-threaded pass per dtype."""
    _check_float("sgd", *params, *grads)
    launch(*sgd_arguments(grads, params, momentum_buffers, lr=lr, momentum=momentum, dampening=dampening,
                          nesterov=nesterov, weight_decay=weight_decay, first_step=first_step))


def adam_foreach(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, step, lr=1e-3, beta1=0.9,
                 beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    """``fused_numpy.adam_update`` for lists of tensors at one step count (``max_exp_avg_sqs``
    None unless ``amsgrad``), in one multi-threaded pass per dtype."""
    _check_float("adam", *params, *grads)
    launch(*adam_arguments(grads, params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step=step, lr=lr, beta1=beta1,
                           beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, decoupled=decoupled))
