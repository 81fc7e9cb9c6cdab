"""The kernels of ``kernel_specs`` as host functions: the launch loop and its Python caller.

CuPy turns a spec into a CUDA kernel with one thread per element ``i``; :func:`library_source`
turns the same spec (preamble, parameter list, operation string) into C++ with a loop over
``i`` instead, split across cores with OpenMP and vectorised by the compiler. One library holds
every dtype signature a kernel has in ``kernel_specs.SIGNATURES``, so a kernel declared there is
built for the host without further code. :class:`NativeKernel` calls it as CuPy calls a kernel:
input arguments, then optional outputs (allocated when left out), broadcasting non-raw arrays.

Layouts: non-raw arrays are either all C-contiguous with one shape (a flat loop the compiler
vectorises) or broadcast to a common shape of at most 2 dimensions and read through element
strides (``i`` stays the C-order index, as on the device); other layouts are copied first.
``raw`` arrays are flat pointers and must be C-contiguous (outputs) or are made so (inputs).
A kernel whose operation starts with ``kernel_specs.ROW_INDEX`` (the recurrent cells over a
[B, H] state) runs its flat launch as rows x units, so that it needs no division per element
and its unit-contiguous accesses vectorise.
"""
import ctypes
import functools
import math
import os
import re

import numpy as np

from . import host_compiler
from .kernel_specs import KERNELS, ROW_INDEX, SIGNATURES

C_TYPES = {"float16": "float16", "float32": "float", "float64": "double", "int8": "signed char",
           "int16": "short", "int32": "int", "int64": "long long", "uint8": "unsigned char",
           "uint16": "unsigned short", "uint32": "unsigned int", "uint64": "unsigned long long",
           "bool": "bool"}
_CTYPES_SCALAR = {"float32": ctypes.c_float, "float64": ctypes.c_double, "int32": ctypes.c_int,
                  "int64": ctypes.c_longlong, "uint64": ctypes.c_ulonglong, "bool": ctypes.c_bool}

# A loop runs on all OpenMP threads from this many elements on: below it, waking the threads
# costs more than the loop. Cheap kernels (a compare or a multiply-add per element, memory bound)
# need more elements than those calling exp/erf/tanh per element.
PARALLEL_MIN = 1 << 13
PARALLEL_MIN_CHEAP = 1 << 16
_PARALLEL_MIN_OF = {
    **dict.fromkeys(("relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
                     "sgd", "sgd_momentum", "check_class_indices"), PARALLEL_MIN_CHEAP),
    # Kernels whose index covers many elements use the threads from fewer indices, about as many
    # elements as the rest: max pooling (a run of up to 64 batch elements times the window's taps;
    # at 8,192 indices a 2x2 pool of [32, 32, 28, 28] stayed on one thread, forward 260 us on 1 and
    # on 2), masked softmax (a row of scores), layer norm (a row forward, 64 rows backward).
    "max_pool2d_forward": 1 << 10, "max_pool2d_backward": 1 << 10,
    "masked_softmax_forward": 1 << 9, "masked_softmax_backward": 1 << 9,
    "layer_norm_forward": 1 << 7, "layer_norm_backward": 2}


def parallel_min(name):
    """The indices from which kernel ``name``'s host loop runs on all OpenMP threads."""
    return _PARALLEL_MIN_OF.get(name, PARALLEL_MIN)


class Param:
    """One kernel parameter: ``raw``, its type (a placeholder letter or a dtype name), its name."""

    __slots__ = ("raw", "type", "name", "is_input")

    def __init__(self, text, is_input):
        words = text.split()
        self.raw = words[0] == "raw"
        self.type, self.name = words[-2], words[-1]
        self.is_input = is_input

    @property
    def is_placeholder(self):
        """True for a type letter (``T``) bound per call, False for a fixed dtype (``int64``)."""
        return len(self.type) == 1


def parse_params(spec):
    """The spec's parameters, inputs then outputs, as :class:`Param` objects."""
    return ([Param(p, True) for p in spec["in_params"].split(",") if p.strip()]
            + [Param(p, False) for p in spec["out_params"].split(",") if p.strip()])


def _dtype_name(entry):
    return entry[1] if isinstance(entry, tuple) else entry


def type_map(params, dtypes):
    """``{letter: dtype name}`` from the dtypes given per parameter."""
    letters = {}
    for p, d in zip(params, dtypes):
        if p.is_placeholder:
            letters.setdefault(p.type, np.dtype(_dtype_name(d)).name)
    return letters


def _c_type(p, letters):
    return C_TYPES[letters[p.type] if p.is_placeholder else np.dtype(p.type).name]


def entry_name(spec, index):
    """The C symbol of signature ``index`` of a spec's library."""
    return f"{spec['name']}__sig{index}"


def _arguments(params, dtypes, letters):
    """The C parameter list: arrays as pointers (non-raw ones as ``_p_<name>``), scalars by value."""
    args = []
    for p, d in zip(params, dtypes):
        ct = _c_type(p, letters)
        const = "const " if p.is_input else ""
        if isinstance(d, tuple):
            args.append(f"const {ct} {p.name}")
        else:
            args.append(f"{const}{ct}* {p.name if p.raw else '_p_' + p.name}")
    return ", ".join(args + ["long long _rows", "long long _cols", "const long long* _strides"])


def _element_refs(params, dtypes, letters, strided):
    """References binding each non-raw array's element ``i`` to the parameter's name."""
    refs, k = [], 0
    for p, d in zip(params, dtypes):
        if p.raw or isinstance(d, tuple):
            continue
        index = f"_r * _strides[{2 * k}] + _c * _strides[{2 * k + 1}]" if strided else "i"
        const = "const " if p.is_input else ""
        refs.append(f"{const}{_c_type(p, letters)}& {p.name} = _p_{p.name}[{index}];")
        k += 1
    return " ".join(refs)


def _flat_loop(spec, params, dtypes, letters, parallel_min):
    """The loop over C-contiguous arrays: over ``i``, or for a ``ROW_INDEX`` kernel over rows and
    units (``i`` recomputed, no division per element); its inner loop is ``omp simd``, since
    elements are independent, as the device's threads are."""
    refs = _element_refs(params, dtypes, letters, False)
    operation = spec["operation"]
    if not operation.startswith(ROW_INDEX):
        return f"""if (_n >= {parallel_min}) {{
#pragma omp parallel for schedule(static)
      for (long long i = 0; i < _n; ++i) {{ {refs} {operation}; }}
    }} else {{
      for (long long i = 0; i < _n; ++i) {{ {refs} {operation}; }}
    }}"""
    body = operation[len(ROW_INDEX):]
    loop = f"""{{
#pragma omp parallel for schedule(static) if(_n >= {parallel_min})
    for (long long row = 0; row < _n / _units; ++row) {{
#pragma omp simd
      for (long long unit = 0; unit < _units; ++unit) {{
        const long long i = row * _units + unit;
        {refs} {body};
      }}
    }}
    }}"""
    # One loop per value of each bool scalar, in which it is a constant: the outlined OpenMP loop
    # would otherwise test it per element and vectorise both sides (an RNN's relu and tanh) or none.
    for p, d in zip(params, dtypes):
        if isinstance(d, tuple) and d[1] == "bool":
            loop = (f"if ({p.name}) {{ const bool {p.name} = true; {loop} }} "
                    f"else {{ const bool {p.name} = false; {loop} }}")
    return f"const long long _units = hidden > 0 ? hidden : 1;\n    {loop}"


def _elementwise_loop(spec, params, dtypes, letters, parallel_min):
    strided = f"{_element_refs(params, dtypes, letters, True)} {spec['operation']};"
    return f"""static void run({_arguments(params, dtypes, letters)}) {{
  const long long _n = _rows * _cols;
  if (_strides == nullptr) {{
    {_flat_loop(spec, params, dtypes, letters, parallel_min)}
  }} else {{
#pragma omp parallel for schedule(static) if(_n >= {parallel_min})
    for (long long _r = 0; _r < _rows; ++_r) {{
      for (long long _c = 0; _c < _cols; ++_c) {{
        const long long i = _r * _cols + _c;
        {strided}
      }}
    }}
  }}
}}"""


def _entry(params, dtypes, letters, symbol, parallel_min):
    """The exported ``symbol``: ``run`` called with NumPy's ``__array_struct__`` capsules instead
    of pointers (reading a capsule costs far less in Python than ``ndarray.ctypes.data``), then
    ``_rows, _cols`` and the element strides (null: one flat, C-contiguous loop). Loaded without
    releasing the GIL, it releases the GIL itself around loops long enough to split."""
    args, values = [], []
    for k, (p, d) in enumerate(zip(params, dtypes)):
        if isinstance(d, tuple):
            args.append(f"const {_c_type(p, letters)} {p.name}")
            values.append(p.name)
        else:
            const = "const " if p.is_input else ""
            args.append(f"void* _capsule{k}")
            values.append(f"({const}{_c_type(p, letters)}*)gpudl_host::array_data(_capsule{k})")
    call = f"run({', '.join(values + ['_rows', '_cols', '_strides'])});"
    layout = ["long long _rows", "long long _cols", "const long long* _strides"]
    return f"""extern "C" void {symbol}({', '.join(args + layout)}) {{
  if (_rows * _cols >= {parallel_min}) {{
    void* _thread = PyEval_SaveThread();
    {call}
    PyEval_RestoreThread(_thread);
  }} else {{
    {call}
  }}
}}"""


def _reduction_loop(spec, params, dtypes, letters, parallel_min):
    reduce_type = spec["reduce_type"]
    rt = C_TYPES[letters[reduce_type]] if reduce_type in letters else C_TYPES.get(reduce_type,
                                                                                  reduce_type)
    ins = [p for p in params if p.is_input]
    outs = [p for p in params if not p.is_input]
    in_dtypes = dtypes[:len(ins)]
    out_refs = " ".join(f"{_c_type(p, letters)}& {p.name} = _p_{p.name}[_r];" for p in outs)
    return f"""static void run({_arguments(params, dtypes, letters)}) {{
#pragma omp parallel for schedule(static) if(_rows * _cols >= {parallel_min})
  for (long long _r = 0; _r < _rows; ++_r) {{
    {rt} _s = {rt}({spec['identity']});
    for (long long _c = 0; _c < _cols; ++_c) {{
      {_element_refs(ins, in_dtypes, letters, True)}
      const {rt} _m = static_cast<{rt}>({spec['map_expr']});
      {{ const {rt} a = _s, b = _m; _s = ({spec['reduce_expr']}); }}
    }}
    {{ const {rt} a = _s; {out_refs} {spec['post_map_expr']}; }}
  }}
}}"""


def library_source(spec, signatures, preamble=None, parallel_min=PARALLEL_MIN):
    """C++ for ``spec`` with one ``extern "C"`` entry per dtype signature (see :func:`entry_name`),
    each in a namespace of its own with its ``typedef``s. ``signatures`` are dtype tuples as in
    ``kernel_specs.Signature.dtypes``; ``preamble`` replaces the spec's (tests use it)."""
    params = parse_params(spec)
    reduction = spec.get("kind") == "reduction"
    parts = [host_compiler.SHIM, host_compiler.PYTHON_ARRAYS, host_compiler.OPENMP_SERIAL,
             spec["preamble"] if preamble is None else preamble]
    for index, dtypes in enumerate(signatures):
        letters = type_map(params, dtypes)
        typedefs = " ".join(f"typedef {C_TYPES[d]} {t};" for t, d in letters.items())
        loop = (_reduction_loop if reduction else _elementwise_loop)(spec, params, dtypes, letters,
                                                                   parallel_min)
        entry = _entry(params, dtypes, letters, entry_name(spec, index), parallel_min)
        parts.append(f"namespace gpudl_signature_{index} {{\n{typedefs}\n{loop}\n{entry}\n}}")
    return "\n".join(parts)


def dtype_signatures(name):
    """The distinct dtype tuples of kernel ``name`` in ``SIGNATURES`` (layout variants merged)."""
    return list(dict.fromkeys(tuple(s.dtypes) for s in SIGNATURES[name]))


def load_entries(spec, signatures, preamble=None, flags=host_compiler.NATIVE_FLAGS,
                 parallel_min=PARALLEL_MIN):
    """Build (cached) and load ``spec``'s library; return ``{array dtypes: C function}``, keyed
    by the tuple of ``numpy.dtype`` of every array parameter (scalars left out). A function takes
    the arrays' ``__array_struct__`` and the scalars in parameter order, then ``rows, cols`` and
    a pointer to 2 element strides per non-raw array (None: flat and C-contiguous)."""
    source = library_source(spec, signatures, preamble, parallel_min)
    lib = host_compiler.build(source, flags, name=spec["name"])
    _serial_after_fork(lib)
    with_gil = ctypes.PyDLL(lib._name, handle=lib._handle)
    entries = {}
    for index, dtypes in enumerate(signatures):
        entry = getattr(with_gil, entry_name(spec, index))
        entry.restype = None
        entry.argtypes = [_CTYPES_SCALAR[d[1]] if isinstance(d, tuple) else ctypes.py_object
                          for d in dtypes] + [ctypes.c_longlong, ctypes.c_longlong, ctypes.c_void_p]
        entries[tuple(np.dtype(d) for d in dtypes if not isinstance(d, tuple))] = entry
    return entries


_fork_handlers = []


def _serial_after_fork(lib):
    """Once per process: a child forked later (a DataLoader or tuning worker, say) runs the
    kernels on one thread, since the parent's OpenMP threads do not exist in it."""
    if not _fork_handlers:
        _fork_handlers.append(lib.gpudl_openmp_serial)
        os.register_at_fork(after_in_child=lib.gpudl_openmp_serial)


class NativeKernel:
    """A kernel of ``kernel_specs.KERNELS`` run on the host, called like a CuPy kernel.

    ``kernel(*inputs)`` returns the outputs (one array or a tuple); ``kernel(*inputs, *outputs)``
    writes into the given ones. Non-raw arrays broadcast against each other; outputs left out
    get the broadcast shape and the dtype their type letter is bound to by the inputs.
    """

    def __init__(self, name, entries):
        self.name = name
        spec = KERNELS[name]
        self.params = parse_params(spec)
        self.n_in = sum(p.is_input for p in self.params)
        self.is_reduction = spec.get("kind") == "reduction"
        self.entries = entries
        arrays = [k for k, d in enumerate(dtype_signatures(name)[0]) if not isinstance(d, tuple)]
        self._arrays = arrays
        self._non_raw = [k for k in arrays if not self.params[k].raw]
        # Without raw params and without ``i`` every element is computed from its own inputs
        # alone, so the loop may follow memory order: arrays sharing one dense layout (a
        # transposed or channels-last view, say) run flat, and outputs take the input's layout.
        self._any_order = len(self._non_raw) == len(arrays) and not re.search(
            r"\bi\b", spec.get("operation", "i"))
        self._shaping = [k for k in self._non_raw if k < self.n_in]  # inputs: outputs' shape
        self._out_dtypes = [p.type if p.is_placeholder else np.dtype(p.type)
                            for p in self.params[self.n_in:]]

    def __call__(self, *args, size=None, axis=None, out=None):
        """``size``: as CuPy's, the number of indices ``i`` of a launch whose arrays are all raw
        (C-contiguous, passed as flat pointers). Reductions: as CuPy's ReductionKernel, ``out``
        receives the result and ``axis`` can only be the last axis."""
        if self.is_reduction and (axis not in (None, -1) and axis != args[0].ndim - 1):
            raise ValueError(f"{self.name}: the host reduces over the last axis only, got {axis}")
        if out is not None:
            args += (out,)
        if len(args) == self.n_in:
            args += self._allocate(args)
        elif len(args) != len(self.params):
            raise TypeError(f"{self.name}: expected {self.n_in} or {len(self.params)} arguments, "
                            f"got {len(args)}")
        arrays = self._arrays
        try:
            entry = self.entries[tuple([args[k].dtype for k in arrays])]
        except (AttributeError, KeyError):
            raise TypeError(f"{self.name}: no native signature for array arguments "
                            f"{[getattr(args[k], 'dtype', type(args[k])) for k in arrays]}") from None
        values = list(args)
        strides = None
        if size is not None:
            rows, cols = 1, size
        elif self._flat(args):
            rows, cols = 1, args[self._non_raw[0]].size
        else:
            rows, cols, strides = self._strided(values)
        for k in arrays:
            values[k] = values[k].__array_struct__  # the capsule keeps its array alive
        entry(*values, rows, cols, None if strides is None else strides.ctypes.data)
        return args[-1] if len(args) == self.n_in + 1 else args[self.n_in:]

    def _allocate(self, args):
        """Outputs for a call that gave only inputs (CuPy's rules: broadcast shape; dtype of the
        type letter, else the parameter's own dtype)."""
        shapes = [args[k].shape for k in self._shaping]
        shape = shapes[0] if shapes.count(shapes[0]) == len(shapes) else np.broadcast_shapes(*shapes)
        if self.is_reduction:
            shape = shape[:-1]
        letters = {self.params[k].type: args[k].dtype for k in self._arrays
                   if k < self.n_in and self.params[k].is_placeholder}
        first = args[self._shaping[0]] if self._shaping else None
        if (self._any_order and first.shape == shape and not first.flags.c_contiguous
                and all(args[k].strides == first.strides for k in self._shaping) and _dense(first)):
            return tuple(np.empty_like(first, letters[d] if isinstance(d, str) else d)
                         for d in self._out_dtypes)
        return tuple(np.empty(shape, letters[d] if isinstance(d, str) else d)
                     for d in self._out_dtypes)

    def _flat(self, args):
        """Whether a flat launch fits: an elementwise kernel whose arrays are all C-contiguous
        and whose non-raw arrays all have one shape."""
        if self.is_reduction or not self._non_raw:
            return False
        first = args[self._non_raw[0]]
        shape = first.shape
        if all(args[k].flags.c_contiguous and (self.params[k].raw or args[k].shape == shape)
               for k in self._arrays):
            return True
        strides = first.strides
        return self._any_order and all(args[k].shape == shape and args[k].strides == strides
                                       for k in self._arrays) and _dense(first)

    def _strided(self, values):
        """``rows, cols`` and the element strides of a broadcast launch over the non-raw arrays'
        common shape, seen as 2-D; ``values`` gets contiguous copies of raw inputs that are not,
        and of non-raw inputs whose layout has no 2-D strides."""
        params = self.params
        shaping = [k for k in self._non_raw if k < self.n_in or not self.is_reduction]
        shape = np.broadcast_shapes(*(values[k].shape for k in shaping))
        rows, cols = (math.prod(shape[:-1]), shape[-1]) if shape else (1, 1)
        strides = []
        for k in self._arrays:
            a, p = values[k], params[k]
            if p.raw or (self.is_reduction and not p.is_input):
                if not a.flags.c_contiguous:
                    if not p.is_input:
                        raise ValueError(f"{self.name}: output {p.name} must be C-contiguous")
                    values[k] = np.ascontiguousarray(a)
                continue
            if len(shape) > 2 or a.ndim > 2:  # flatten to [rows, cols]
                if p.is_input:
                    a = np.ascontiguousarray(np.broadcast_to(a, shape))
                elif not a.flags.c_contiguous:
                    raise ValueError(f"{self.name}: output {p.name} of shape {a.shape} must be "
                                     "C-contiguous or have at most 2 dimensions")
                values[k] = a = a.reshape(rows, cols)
            dims = (1,) * (2 - a.ndim) + a.shape
            steps = (0,) * (2 - a.ndim) + a.strides
            strides += [steps[0] // a.itemsize if dims[0] != 1 else 0,
                        steps[1] // a.itemsize if dims[1] != 1 else 0]
        return rows, cols, np.array(strides or [0], dtype=np.int64)


def _dense(a):
    """True when ``a``'s elements fill one gap-free block starting at its data pointer, in some
    axis order (C- or F-contiguous, or a permutation of either, all strides positive)."""
    if a.flags.c_contiguous:
        return True
    expected = a.itemsize
    for stride, n in sorted(zip(a.strides, a.shape)):
        if n == 1:
            continue
        if stride != expected:
            return False
        expected *= n
    return True


@functools.cache
def kernel(name):
    """The :class:`NativeKernel` for ``kernel_specs.KERNELS[name]`` (built and loaded once)."""
    signatures = dtype_signatures(name)
    return NativeKernel(name, load_entries(KERNELS[name], signatures, parallel_min=parallel_min(name)))
