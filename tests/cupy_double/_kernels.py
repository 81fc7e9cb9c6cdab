"""``cupy.ElementwiseKernel`` / ``cupy.ReductionKernel`` with CuPy's Python-side rules, run on the host.

The argument handling is a port of CuPy 14.2's ``cupy/_core/_kernel.pyx`` and ``_reduction.pyx``
(parameter parsing, ``_decide_params_type_core``, ``_preprocess_args``, ``_broadcast``,
``_get_out_args_with_params``, scalar casting, ``_reduce_dims``), checks in the same order and
with the same messages. The ``operation``/``preamble`` strings are compiled by g++ (see
``_host_cxx``) into a loop over the launch's index space, with the same variable names
(``i``, ``_ind``, ``_raw_x``, ``_in_ind``/``_out_ind``, ``_J``) and the same scoping.
"""
import functools
import re

import numpy

from . import _core, _counters, _host_cxx

_VALID_NAME = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$")
_SCALAR_DTYPE = {bool: numpy.dtype(bool), int: numpy.dtype("l"), float: numpy.dtype("d"),
                 complex: numpy.dtype("D")}


def get_dtype(t):
    """``cupy._core._dtype.get_dtype``: NumPy's dtype for a spec."""
    return numpy.dtype(t)


class ParameterInfo:
    """One parameter of a kernel: ``[raw] [_non_const] <type> <name>``."""

    __slots__ = ("name", "dtype", "ctype", "raw", "is_const")

    def __init__(self, param, is_const):
        self.name = None
        self.dtype = None
        self.ctype = None
        self.raw = False
        self.is_const = is_const
        s = tuple(i for i in param.split() if len(i) != 0)
        if len(s) < 2:
            raise Exception(f"Syntax error: {param}")
        t, self.name = s[-2:]
        if t == "CIndexer":
            pass
        elif len(t) == 1:
            self.ctype = t
        else:
            self.dtype = get_dtype(t)
            self.ctype = _host_cxx.c_name(self.dtype)
        for i in s[:-2]:
            if i == "raw":
                self.raw = True
            elif i == "_non_const":
                self.is_const = False
            else:
                raise Exception(f'Unknown keyword "{i}"')

    def __repr__(self):
        return (f"<ParameterInfo(name={self.name!r} dtype={self.dtype!r} ctype={self.ctype!r} "
                f"raw={self.raw!r} is_const={self.is_const!r})>")


@functools.cache
def get_param_info(s, is_const):
    """The parameters of a comma-separated list (memoized as in CuPy)."""
    if len(s) == 0:
        return ()
    return tuple(ParameterInfo(i, is_const) for i in s.strip().split(","))


def decide_params_type_core(in_params, out_params, in_args_dtype, out_args_dtype):
    """CuPy's type resolution: placeholders bound by the arrays given, fixed types checked."""
    type_dict = {}
    if out_args_dtype:
        assert len(out_params) == len(out_args_dtype)
        for p, a in zip(out_params, out_args_dtype):
            if a is None:
                raise TypeError("Output arguments must be cupy.ndarray")
            if p.dtype is not None:
                if get_dtype(a) != get_dtype(p.dtype):
                    raise TypeError(f"Type is mismatched. {p.name} {a} {p.dtype}")
            elif p.ctype in type_dict:
                t = type_dict[p.ctype]
                if get_dtype(t) != get_dtype(a):
                    raise TypeError(f"Type is mismatched. {p.name} {a} {t} {p.ctype}")
            else:
                type_dict[p.ctype] = a
    assert len(in_params) == len(in_args_dtype)
    for p, a in zip(in_params, in_args_dtype):
        if a is None:
            continue
        if p.dtype is not None:
            if numpy.dtype(a) != numpy.dtype(p.dtype):
                raise TypeError(f"Type is mismatched. {p.name} {a} {p.dtype}")
        elif p.ctype in type_dict:
            t = type_dict[p.ctype]
            if numpy.dtype(t) != numpy.dtype(a):
                raise TypeError(f"Type is mismatched. {p.name} {a} {t} {p.ctype}")
        else:
            type_dict[p.ctype] = a
    in_types = tuple(type_dict[p.ctype] if p.dtype is None else p.dtype for p in in_params)
    out_types = tuple(type_dict[p.ctype] if p.dtype is None else p.dtype for p in out_params)
    return in_types, out_types, tuple(sorted(type_dict.items()))


class CScalar:
    """A scalar kernel argument (``cupy/_core/_scalar.pyx``): Python or NumPy number or bool."""

    __slots__ = ("value", "dtype")

    def __init__(self, value):
        if isinstance(value, numpy.generic) and value.dtype.kind in "biufc":
            self.dtype = value.dtype
        elif type(value) in _SCALAR_DTYPE or isinstance(value, (bool, int, float, complex)):
            self.dtype = _SCALAR_DTYPE[bool if isinstance(value, bool) else
                                       int if isinstance(value, int) else
                                       float if isinstance(value, float) else complex]
            if isinstance(value, int) and not isinstance(value, bool) and \
                    not -2 ** 63 <= value < 2 ** 64:
                raise OverflowError("Python int too large to convert to C long")
        else:
            raise _core.unsupported(value)
        self.value = value

    def apply_dtype(self, dtype):
        """Cast to the resolved parameter type with NumPy's assignment rules (may raise)."""
        packed = numpy.empty((), get_dtype(dtype))
        packed[()] = self.value
        return _Packed(packed)


class _Packed:
    """A scalar argument cast to its parameter type, in memory the kernel reads it from."""

    __slots__ = ("array", "dtype")

    def __init__(self, array):
        self.array, self.dtype = array, array.dtype


def _preprocess_args(args):
    """Device arrays stay (as their host arrays); scalars become CScalar; the rest is refused."""
    return [a._a if type(a) is _core.ndarray else CScalar(a) for a in args]


def _is_array(a):
    return isinstance(a, numpy.ndarray)


def _format_shapes(shapes):
    return " ".join(str(tuple(s)).replace(" ", "") for s in shapes)


def _broadcast(args, params, use_size):
    """Broadcast the non-raw arrays (outputs included); return ``(args, shape)``."""
    nonraw = [i for i, a in enumerate(args) if not params[i].raw and _is_array(a)]
    if use_size:
        if nonraw:
            raise ValueError("Specified 'size' can be used only if all of the ndarray are 'raw'.")
    elif not nonraw:
        raise ValueError("Loop size is undecided.")
    shapes = [args[i].shape for i in nonraw]
    try:
        shape = numpy.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError("operands could not be broadcast together with shapes "
                         f"{_format_shapes(shapes)}") from None
    out = list(args)
    for i in nonraw:
        if args[i].shape != shape:
            out[i] = numpy.broadcast_to(args[i], shape)
    return out, shape


def _get_out_args_with_params(out_args, out_types, out_shape, out_params, is_size_specified):
    """Allocate the outputs (none given) or check the ones given."""
    if not out_args:
        for p in out_params:
            if p.raw and not is_size_specified:
                raise ValueError("Output array size is Undecided")
        return [_core.wrap(numpy.empty(out_shape, t)) for t in out_types]
    for p, a in zip(out_params, out_args):
        if type(a) is not _core.ndarray:
            raise TypeError("Output arguments type must be cupy.ndarray")
        if not p.raw and a.shape != tuple(out_shape):
            raise ValueError("Out shape is mismatched")
    return list(out_args)


def _reduce_dims(args, params, shape):
    """Merge dimensions the non-raw arrays traverse contiguously (``_reduced_view_core``)."""
    ndim = len(shape)
    if ndim <= 1 or not args:
        return shape
    arrays, strided = [], []
    for i, a in enumerate(args):
        if params[i].raw or not _is_array(a):
            continue
        arrays.append(i)
        if not a.flags.c_contiguous:
            if ndim == 2:
                return shape
            strided.append(i)
    if not arrays:
        return shape
    if not strided:
        total = args[arrays[0]].size
        for i in arrays:
            args[i] = numpy.lib.stride_tricks.as_strided(args[i], (total,), (args[i].itemsize,))
        return (total,)
    vecshape, axes, last_ax = list(shape), [], -1
    for ax in range(ndim):
        if vecshape[ax] == 1:
            continue
        if last_ax < 0:
            last_ax = ax
            continue
        if any(args[i].strides[ax] * vecshape[ax] != args[i].strides[last_ax] for i in strided):
            axes.append(last_ax)
        else:
            vecshape[ax] *= vecshape[last_ax]
        last_ax = ax
    if last_ax >= 0:
        axes.append(last_ax)
    if len(axes) == ndim:
        return shape
    newshape = tuple(vecshape[ax] for ax in axes)
    for i in arrays:
        args[i] = numpy.lib.stride_tricks.as_strided(
            args[i], newshape, tuple(args[i].strides[ax] for ax in axes))
    return newshape


def _signature(params, args):
    """Per argument: ``("a", dtype char, ndim)`` or ``("s", dtype char)`` (the compile key)."""
    return tuple(("a", a.dtype.char, a.ndim) if _is_array(a) else ("s", a.dtype.char)
                 for a in args[:len(params)])


def _declare(params, sig, first_meta):
    """C++ declarations of the kernel parameters; return ``(lines, meta offsets)``."""
    lines, offsets, off = [], [], first_meta
    for k, (p, s) in enumerate(zip(params, sig)):
        const = "const " if p.is_const else ""
        if s[0] == "s":
            ctype = _host_cxx.host_type(s[1])
            lines.append(f"  {const}{ctype} {p.name} = *(const {ctype}*)_args[{k}];")
            offsets.append(None)
            continue
        var = p.name if p.raw else f"_raw_{p.name}"
        lines.append(f"  {const}CArray<{_host_cxx.host_type(s[1])}, {s[2]}> {var}"
                     f"(_args[{k}], _meta + {off}, {k});")
        offsets.append(off)
        off += 1 + 2 * s[2]
    return lines, off


def _meta_and_pointers(args, indexer_shapes):
    meta, pointers = [], []
    for a in args:
        if _is_array(a):
            pointers.append(a.ctypes.data)
            meta += [a.size, *a.shape, *a.strides]
        else:
            pointers.append(a.array.ctypes.data)
    for shape in indexer_shapes:
        meta += list(shape)
    return pointers, meta


def _index_32_bits(a):
    """CuPy's ``ndarray._index_32_bits``: the memory the array spans fits 2**31 bytes."""
    root = a
    while isinstance(root.base, numpy.ndarray):
        root = root.base
    return max(root.nbytes, a.nbytes) <= 1 << 31


def _record(kernel, args, params, indexer_shapes):
    """Count the launch and record it as CuPy's code generator would see it (``Launch``)."""
    infos = tuple(("array", a.dtype.name, a.ndim, bool(a.flags.c_contiguous), _index_32_bits(a))
                  if _is_array(a) else ("scalar", a.dtype.name)
                  for a, _ in zip(args, params))
    idx32 = all(numpy.prod(s, dtype=numpy.int64) <= 1 << 31 for s in indexer_shapes)
    _counters.kernel_launch(_counters.Launch(kernel.name, infos,
                                             tuple(len(s) for s in indexer_shapes), bool(idx32)))


def _run(kernel, lib, args, params, indexer_shapes):
    _record(kernel, args, params, indexer_shapes)
    error = _host_cxx.launch(lib, *_meta_and_pointers(args, indexer_shapes))
    if error is not None:
        param, index, size = error
        raise IndexError(f"kernel {kernel.name!r}: raw parameter {params[param].name!r} indexed "
                         f"at {index}, outside [0, {size}) (cupy_double bounds check; on a GPU "
                         "this is a silent out-of-bounds access)")


class ElementwiseKernel:
    """User-defined elementwise kernel (``cupy.ElementwiseKernel``), executed on the host."""

    def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True,
                 preamble="", no_return=False, return_tuple=False, **kwargs):
        if not _VALID_NAME.match(name):
            raise ValueError(f'Invalid kernel name: "{name}"')
        self.in_params = get_param_info(in_params, True)
        self.out_params = get_param_info(out_params, False)
        self.nin = len(self.in_params)
        self.nout = len(self.out_params)
        self.nargs = self.nin + self.nout
        self.params = self.in_params + self.out_params + get_param_info("CIndexer _ind", False)
        self.operation = operation
        self.name = self.__name__ = name
        self.reduce_dims = reduce_dims
        self.preamble = preamble
        self.no_return = no_return
        self.return_tuple = return_tuple
        self.kwargs = kwargs
        self._params_type_memo = {}
        self._libs = {}
        if "i" in [p.name for p in self.in_params + self.out_params]:
            raise ValueError("Can not use 'i' as a parameter name")

    def _decide_params_type(self, in_args_dtype, out_args_dtype):
        key = (in_args_dtype, out_args_dtype)
        ret = self._params_type_memo.get(key)
        if ret is None:
            ret = decide_params_type_core(self.in_params, self.out_params, in_args_dtype,
                                          out_args_dtype)
            self._params_type_memo[key] = ret
        return ret

    def __call__(self, *args, **kwargs):
        size = kwargs.pop("size", -1)
        kwargs.pop("stream", None)
        block_size = kwargs.pop("block_size", 128)
        if kwargs:
            raise TypeError(f"Wrong arguments {kwargs}")
        if block_size <= 0:
            raise ValueError("block_size must be greater than zero")
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(f"Wrong number of arguments for {self.name!r}. It must be either "
                            f"{self.nin} or {self.nargs} (with outputs), but given {len(args)}.")
        arg_list = _preprocess_args(args)
        given_out = list(args[self.nin:])
        broadcast, shape = _broadcast(arg_list, self.params, size != -1)
        in_args = broadcast[:self.nin]
        in_types = tuple(a.dtype if _is_array(a) else None for a in in_args)
        out_types_given = tuple(a.dtype for a in arg_list[self.nin:])
        in_types, out_types, type_map = self._decide_params_type(in_types, out_types_given)
        is_size_specified = size != -1
        if is_size_specified:
            shape = (size,)
        out_args = _get_out_args_with_params(given_out, out_types, shape, self.out_params,
                                             is_size_specified)
        if self.no_return:
            ret = None
        elif not self.return_tuple and self.nout == 1:
            ret = out_args[0]
        else:
            ret = tuple(out_args)
        if 0 in shape:
            return ret
        in_args = [x.apply_dtype(t) if type(x) is CScalar else x
                   for x, t in zip(in_args, in_types)]
        inout = in_args + [a._a for a in out_args]
        if self.reduce_dims:
            shape = _reduce_dims(inout, self.params, shape)
        sig = (_signature(self.params, inout), len(shape), type_map)
        lib = self._libs.get(sig)
        if lib is None:
            lib = self._libs[sig] = _host_cxx.compile_entry(self._source(*sig))
        _run(self, lib, inout, self.params, [shape])
        return ret

    def _source(self, sig, ndim, type_map):
        unknown = set(self.kwargs) - {"options", "loop_prep", "after_loop"}
        if unknown:
            raise TypeError(f"_get_elementwise_kernel() got an unexpected keyword argument "
                            f"{sorted(unknown)[0]!r}")
        lines, meta_end = _declare(self.params, sig, 0)
        refs = [f"    {'const ' if p.is_const else ''}{p.ctype} &{p.name} = "
                f"_raw_{p.name}[_ind.get()];"
                for p, s in zip(self.params, sig) if s[0] == "a" and not p.raw]
        return "\n".join([
            _host_cxx.PRELUDE, _host_cxx.defines(self.kwargs.get("options")),
            _host_cxx.typedefs(type_map), self.preamble,
            'extern "C" int _cupy_double_entry(void** _args, const long long* _meta) {',
            *lines, f"  CIndexer<{ndim}> _ind(_meta + {meta_end});",
            f"  {self.kwargs.get('loop_prep', '')};",
            "  for (ptrdiff_t i = 0; i < _ind.size(); ++i) {", "    _ind.set(i);", *refs,
            self.operation + ";", "  }", f"  {self.kwargs.get('after_loop', '')};",
            "  return 0;", "}"])


def _get_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim)), ()
    axis = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    reduce_axis = tuple(sorted(numpy.lib.array_utils.normalize_axis_index(a, ndim) for a in axis))
    out_axis = tuple(d for d in range(ndim) if d not in reduce_axis)
    if len(reduce_axis) + len(out_axis) != ndim:
        raise ValueError("duplicate value in 'axis'")
    return reduce_axis, out_axis


class ReductionKernel:
    """User-defined reduction kernel (``cupy.ReductionKernel``), executed on the host.

    The reduction runs sequentially per output element (a GPU reduces in a tree order).
    """

    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                 name="reduce_kernel", reduce_type=None, reduce_dims=True, preamble="",
                 options=()):
        self.name = self.__name__ = name
        self.identity = "" if identity is None else str(identity)
        self.in_params = get_param_info(in_params, True)
        self.out_params = get_param_info(out_params, False)
        self.params = (self.in_params + self.out_params
                       + get_param_info("CIndexer _in_ind, CIndexer _out_ind", False)
                       + get_param_info("int32 _block_stride", True))
        self.nin = len(self.in_params)
        self.nout = len(self.out_params)
        self.nargs = self.nin + self.nout
        self.reduce_expr = reduce_expr
        self.map_expr = map_expr
        self.post_map_expr = post_map_expr
        self.options = options
        self.reduce_dims = reduce_dims
        self.reduce_type = self.out_params[0].ctype if reduce_type is None else reduce_type
        self.preamble = preamble
        self._libs = {}

    def __call__(self, *args, **kwargs):
        out = kwargs.pop("out", None)
        axis = kwargs.pop("axis", None)
        keepdims = kwargs.pop("keepdims", False)
        kwargs.pop("stream", None)
        if kwargs:
            raise TypeError(f"Wrong arguments {kwargs}")
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(f"Wrong number of arguments for {self.name}")
        out_args = list(args[self.nin:])
        if out is not None:
            if self.nout != 1:
                raise NotImplementedError("")
            if out_args:
                raise ValueError("cannot specify 'out' as both a positional and keyword argument")
            out_args = [out]
        in_args = _preprocess_args(args[:self.nin])
        out_pre = _preprocess_args(out_args)
        in_args, broad_shape = _broadcast(in_args, self.in_params, False)
        in_types, out_types, type_map = decide_params_type_core(
            self.in_params, self.out_params,
            tuple(a.dtype.type if _is_array(a) else None for a in in_args),
            tuple(a.dtype.type if _is_array(a) else None for a in out_pre))
        reduce_axis, out_axis = _get_axis(axis, len(broad_shape))
        if keepdims:
            out_shape = tuple(1 if d in reduce_axis else n for d, n in enumerate(broad_shape))
        else:
            out_shape = tuple(broad_shape[d] for d in out_axis)
        out_args = _get_out_args_with_params(out_args, out_types, out_shape, self.out_params,
                                             False)
        ret = out_args[0]
        if ret.size == 0:
            return ret
        if self.identity == "" and 0 in broad_shape:
            raise ValueError(f"zero-size array to reduction operation {self.name} which has "
                             "no identity")
        index_t = "int64" if numpy.prod(broad_shape) / max(numpy.prod(out_shape), 1) > 0x7fffffff \
            else "int32"
        type_map = type_map + (("IndexT", numpy.dtype(index_t)),)
        in_args = [x.apply_dtype(t) if type(x) is CScalar else x
                   for x, t in zip(in_args, in_types)]
        permutation = reduce_axis + out_axis
        in_shape = broad_shape
        if permutation != tuple(range(len(permutation))):
            if any(p.raw for p in self.in_params):
                raise NotImplementedError("Illegal conditions")
            in_args = [a.transpose(permutation) if _is_array(a) else a for a in in_args]
            in_shape = tuple(broad_shape[d] for d in permutation)
        out_host = [a._a for a in out_args]
        if self.reduce_dims:
            in_shape = _reduce_dims(in_args, self.in_params, in_shape)
            out_shape = _reduce_dims(out_host, self.out_params, out_shape)
        inout = in_args + out_host
        params = self.in_params + self.out_params
        sig = (_signature(params, inout), len(in_shape), len(out_shape), type_map)
        lib = self._libs.get(sig)
        if lib is None:
            lib = self._libs[sig] = _host_cxx.compile_entry(self._source(*sig))
        _run(self, lib, inout, params, [in_shape, out_shape])
        return ret

    def _source(self, sig, in_ndim, out_ndim, type_map):
        params = self.in_params + self.out_params
        lines, meta_end = _declare(params, sig, 0)
        inputs = [(f"      const {p.ctype} {p.name}" if p.is_const else
                   f"      {p.ctype}& {p.name}") + f" = _raw_{p.name}[_in_ind.get()];"
                  for p, s in zip(self.in_params, sig) if s[0] == "a" and not p.raw]
        outputs = [f"    {p.ctype} &{p.name} = _raw_{p.name}[_out_ind.get()];"
                   for p, s in zip(self.out_params, sig[self.nin:]) if s[0] == "a" and not p.raw]
        return "\n".join([
            _host_cxx.PRELUDE, _host_cxx.defines(self.options), _host_cxx.typedefs(type_map),
            self.preamble,
            f"#define REDUCE(a, b) ({self.reduce_expr})",
            f"#define POST_MAP(a) ({self.post_map_expr})",
            f"typedef {self.reduce_type} _type_reduce;",
            'extern "C" int _cupy_double_entry(void** _args, const long long* _meta) {',
            *lines,
            f"  CIndexer<{in_ndim}> _in_ind(_meta + {meta_end});",
            f"  CIndexer<{out_ndim}> _out_ind(_meta + {meta_end + in_ndim});",
            "  for (ptrdiff_t _i = 0; _i < _out_ind.size(); ++_i) {",
            f"    _type_reduce _s = _type_reduce({self.identity});",
            "    IndexT _J = 0;",
            "    for (ptrdiff_t _j = _i; _j < _in_ind.size(); _j += _out_ind.size(), ++_J) {",
            "      _in_ind.set(_j);", *inputs,
            f"      _type_reduce _a = static_cast<_type_reduce>({self.map_expr});",
            "      _s = REDUCE(_s, _a);", "    }",
            "    _out_ind.set(_i);", *outputs, "    POST_MAP(_s);", "  }", "  return 0;", "}"])


class RawKernel:
    """``cupy.RawKernel``: constructed, but launching needs a GPU (no stand-in)."""

    def __init__(self, code, name, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, jitify=False):
        self.code, self.name, self.options = code, name, options

    def __call__(self, grid, block, args, **kwargs):
        raise _core.no_stand_in("cupy.RawKernel.__call__",
                                "raw CUDA with blocks and threads is not emulated")
