"""``cupy.ndarray`` on the host: a wrapper (not a NumPy subclass) that behaves like CuPy's.

A NumPy array is held inside. Everything CuPy refuses is refused: implicit conversion to NumPy
(``__array__`` raises, there is no buffer protocol, no ``__array_interface__``, no ``__index__``),
host arrays and lists as ufunc operands, host arrays as arguments of ``cupy.*`` functions.
Reductions and indexing give 0-d device arrays; ``float()``/``int()``/``bool()`` work (they sync
on a GPU). ``__array_ufunc__``/``__array_function__`` follow ``cupy/_core/core.pyx``.
"""
import functools

import numpy

from . import _counters, _manifest
from ._manifest import no_stand_in

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")
SCALAR_TYPES = (bool, int, float, complex, numpy.bool_, numpy.number)
_COMPARISONS = ("greater", "greater_equal", "less", "less_equal", "equal", "not_equal")
_state = {"root": None, "pool": None, "device": None}


def root_module():
    """The double's ``cupy`` module (set by the namespace builder)."""
    return _state["root"]


def unsupported(value):
    """CuPy's error for an argument it cannot put into a kernel (``_scalar.CScalar``)."""
    return TypeError(f"Unsupported type {type(value)}")


def is_scalar(value):
    """True for what CuPy turns into a kernel scalar: Python and NumPy numbers and bools."""
    return isinstance(value, SCALAR_TYPES) and not isinstance(value, numpy.ndarray)


class _Flags:
    """``ndarray.flags``: the memory-layout flags CuPy reports."""

    __slots__ = ("c_contiguous", "f_contiguous", "owndata")

    def __init__(self, host, owndata):
        self.c_contiguous = bool(host.flags.c_contiguous)
        self.f_contiguous = bool(host.flags.f_contiguous)
        self.owndata = owndata

    def __getitem__(self, name):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]

    def __repr__(self):
        return (f"  C_CONTIGUOUS : {self.c_contiguous}\n  F_CONTIGUOUS : {self.f_contiguous}\n"
                f"  OWNDATA : {self.owndata}")


class MemoryPointer:
    """``ndarray.data``: where the array's memory is (a host address here)."""

    __slots__ = ("ptr", "device_id", "size")

    def __init__(self, host, device_id):
        self.ptr = host.ctypes.data
        self.device_id = device_id
        self.size = host.nbytes

    @property
    def device(self):
        """The device owning the memory."""
        return _state["device"](self.device_id)


def wrap(host, device_id=None):
    """A device array around the NumPy array ``host`` (the memory pool counts fresh buffers)."""
    if host.dtype.kind not in "biufc":
        raise TypeError(f"cupy_double: dtype {host.dtype} is not supported by CuPy arrays")
    arr = object.__new__(ndarray)
    arr._a = host
    arr._device_id = _state["device"]().id if device_id is None else device_id
    if host.base is None:
        _state["pool"].track(host)
    return arr


def wrap_result(value, memo=None):
    """Turn NumPy results into device results: arrays and NumPy scalars become (0-d) arrays."""
    if isinstance(value, numpy.ndarray):
        if memo and id(value) in memo:
            return memo[id(value)]
        return wrap(value)
    if isinstance(value, numpy.generic):
        return wrap(numpy.asarray(value))
    if type(value) in (tuple, list):
        return type(value)(wrap_result(v, memo) for v in value)
    return value


def unwrap(value, memo, qualname, host_ok=False):
    """Device arrays -> their NumPy array (recorded in ``memo``); host arrays refused."""
    if type(value) is ndarray:
        memo[id(value._a)] = value
        return value._a
    if isinstance(value, numpy.ndarray) and not host_ok:
        raise TypeError(f"Unsupported type {type(value)} (cupy_double: {qualname} got a host "
                        "numpy.ndarray; move it to the device with cupy.asarray first)")
    if type(value) in (tuple, list):
        return type(value)(unwrap(v, memo, qualname, host_ok) for v in value)
    return value


def fresh(result, memo):
    """True if the host ``result`` holds a newly computed array (not a view, not an input): the
    op ran a kernel on a GPU."""
    if isinstance(result, numpy.generic):
        return True
    if isinstance(result, numpy.ndarray):
        return id(result) not in memo and result.base is None
    if type(result) in (tuple, list):
        return any(fresh(r, memo) for r in result)
    return False


def _index(key):
    """An index for the host array: device arrays unwrapped, Ellipsis added so results are views.

    An integer or boolean device array in the key makes the indexing a gather or scatter kernel;
    a boolean mask read also syncs (the result's size depends on the data)."""
    items = key if type(key) is tuple else (key,)
    if any(type(i) is ndarray or type(i) is list for i in items):
        _counters.launch()
    items = tuple(i._a if type(i) is ndarray else i for i in items)
    if not any(i is Ellipsis for i in items):
        items += (Ellipsis,)
    return items


_IN_PLACE_METHODS = frozenset({"sort", "partition", "put"})


def _method_forwarder(name):
    sig = _manifest.signature(f"cupy.ndarray.{name}")

    def method(self, *args, **kwargs):
        args, kwargs = sig.bind((self,) + args, kwargs)
        memo = {id(self._a): self}
        host_args = [unwrap(a, memo, f"cupy.ndarray.{name}") for a in args[1:]]
        host_kwargs = {k: unwrap(v, memo, f"cupy.ndarray.{name}") for k, v in kwargs.items()
                       if not (v is None and k in ("casting", "subok"))}
        target = getattr(self._a, name, None)
        if target is None:  # NumPy 2 dropped ndarray.ptp
            target = functools.partial(getattr(numpy, name), self._a)
        result = target(*host_args, **host_kwargs)
        if name in _IN_PLACE_METHODS or fresh(result, memo):
            _counters.launch()
        return wrap_result(result, memo)

    method.__name__ = name
    method.__qualname__ = f"ndarray.{name}"
    return method


class ndarray:
    """CuPy's device array, imitated on the host (see the module docstring)."""

    __slots__ = ("_a", "_device_id", "__weakref__")
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise no_stand_in("cupy.ndarray(memptr=..., strides=...)")
        self._a = numpy.empty(shape, dtype, order=order)
        self._device_id = _state["device"]().id
        _state["pool"].track(self._a)

    # -------------------------------------------------------------- attributes
    shape = property(lambda self: self._a.shape, doc="Lengths of axes.")
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim, doc="Number of dimensions.")
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize, doc="Size of each element in bytes.")
    nbytes = property(lambda self: self._a.nbytes, doc="Total size of all elements in bytes.")
    strides = property(lambda self: self._a.strides, doc="Strides of axes in bytes.")
    T = property(lambda self: wrap(self._a.T, self._device_id))
    mT = property(lambda self: wrap(self._a.mT, self._device_id))
    flags = property(lambda self: _Flags(self._a, self._a.base is None))
    data = property(lambda self: MemoryPointer(self._a, self._device_id))
    device = property(lambda self: _state["device"](self._device_id),
                      doc="CUDA device on which this array resides.")

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    @property
    def base(self):
        """The array whose memory this view uses (None for an owner)."""
        base = self._a.base
        while isinstance(base, numpy.ndarray) and base.base is not None:
            base = base.base
        return wrap(base, self._device_id) if isinstance(base, numpy.ndarray) else None

    @property
    def real(self):
        """The real part (a view for complex arrays)."""
        return wrap(self._a.real, self._device_id)

    @property
    def imag(self):
        """The imaginary part."""
        return wrap(self._a.imag, self._device_id)

    flat = property(lambda self: _raise(no_stand_in("cupy.ndarray.flat")))
    cstruct = property(lambda self: _raise(no_stand_in("cupy.ndarray.cstruct")))

    @property
    def __cuda_array_interface__(self):
        # CuPy arrays have it (CuPy's __array_ufunc__ tests for it); the pointer is a host one.
        return {"shape": self._a.shape, "typestr": self._a.dtype.str, "version": 3,
                "data": (self._a.ctypes.data, False),
                "strides": None if self._a.flags.c_contiguous else self._a.strides}

    # -------------------------------------------------------------- conversions
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def get(self, stream=None, order="C", out=None, blocking=True):
        """A host (NumPy) copy of the array."""
        _counters.sync("cupy.ndarray.get")
        if out is not None:
            if not isinstance(out, numpy.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            if self.dtype != out.dtype:
                raise TypeError(f"{out.dtype} array cannot be obtained from {self.dtype} array")
            if self.shape != out.shape:
                raise ValueError(f"Shape mismatch. Expected shape: {self.shape}, "
                                 f"actual shape: {out.shape}")
            out[...] = self._a
            return out
        order = order.upper()
        if order not in ("C", "F", "A"):
            raise ValueError(f"unsupported order: {order}")
        return numpy.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        """Copy the host array ``arr`` into this array."""
        if not isinstance(arr, numpy.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if self.dtype != arr.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if self.shape != arr.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        if not (self._a.flags.c_contiguous or self._a.flags.f_contiguous):
            raise RuntimeError("Cannot set to non-contiguous array")
        self._a[...] = arr

    def item(self):
        """The single element as a Python scalar."""
        _counters.sync("cupy.ndarray item")
        return self._a.item()

    def tolist(self):
        """The data as nested Python lists."""
        _counters.sync("cupy.ndarray tolist")
        return self._a.tolist()

    def tobytes(self, order="C"):
        """The raw bytes."""
        _counters.sync("cupy.ndarray tobytes")
        return self._a.tobytes(order)

    def __float__(self):
        _counters.sync("cupy.ndarray float()")
        return float(self._a)

    def __int__(self):
        _counters.sync("cupy.ndarray int()")
        return int(self._a)

    def __complex__(self):
        _counters.sync("cupy.ndarray complex()")
        return complex(self._a)

    def __bool__(self):
        _counters.sync("cupy.ndarray bool()")
        return bool(self._a)

    def __format__(self, format_spec):
        _counters.sync("cupy.ndarray format()")
        return format(self._a if self._a.ndim else self._a[()], format_spec)

    def __repr__(self):
        _counters.sync("cupy.ndarray repr()")
        return repr(self._a)

    def __str__(self):
        _counters.sync("cupy.ndarray str()")
        return str(self._a)

    def __reduce__(self):
        return _from_host, (self.get(),)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    def __dlpack_device__(self):
        return (2, self._device_id)  # kDLCUDA

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        raise no_stand_in("cupy.ndarray.__dlpack__", "DLPack capsules would carry host memory")

    def toDlpack(self):
        """No stand-in (DLPack capsules of device memory)."""
        raise no_stand_in("cupy.ndarray.toDlpack")

    def mdspan(self, *, index_type, allow_unsafe=False):
        """No stand-in."""
        raise no_stand_in("cupy.ndarray.mdspan")

    def reduced_view(self, dtype=None):
        """A view with the fewest dimensions (1-D for a C-contiguous array)."""
        if self._a.ndim > 1 and self._a.flags.c_contiguous:
            return wrap(self._a.reshape(-1), self._device_id)
        return self

    # -------------------------------------------------------------- container protocol
    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._a.shape[0]))

    def __getitem__(self, key):
        index = _index(key)
        if any(type(i) is numpy.ndarray and i.dtype == bool for i in index):
            _counters.sync("boolean-mask indexing")
        return wrap(self._a[index], self._device_id)

    def __setitem__(self, key, value):
        self._a[_index(key)] = _fill_value(value)
        _counters.launch()

    def fill(self, value):
        """Set every element to ``value``."""
        self._a.fill(_fill_value(value))
        _counters.launch()

    def dot(self, b, out=None):
        """Matrix product with the device array ``b``."""
        for name, v in (("b", b), ("out", out)):
            if v is not None and type(v) is not ndarray:
                raise TypeError(f"Argument '{name}' has incorrect type (expected "
                                f"cupy._core.core._ndarray_base, got {type(v).__name__})")
        return root_module().dot(self, b, out)

    def scatter_add(self, slices, value):
        """``cupyx.scatter_add(self, slices, value)``."""
        _scatter(numpy.add, self, slices, value)

    def scatter_max(self, slices, value):
        """``cupyx.scatter_max(self, slices, value)``."""
        _scatter(numpy.maximum, self, slices, value)

    def scatter_min(self, slices, value):
        """``cupyx.scatter_min(self, slices, value)``."""
        _scatter(numpy.minimum, self, slices, value)

    # -------------------------------------------------------------- NumPy protocols
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        cupy = root_module()
        inout = inputs
        if "out" in kwargs:
            out = kwargs["out"]
            if len(out) != 1:
                raise ValueError("The 'out' parameter must have exactly one array value")
            inout += out
            kwargs["out"] = out[0]
        name = ufunc.__name__
        cp_ufunc = getattr(cupy, name, None)
        if cp_ufunc is None:
            return NotImplemented
        if method != "__call__":
            return getattr(cp_ufunc, method)(*inputs, **kwargs)
        for x in inout:
            if not (hasattr(x, "__cuda_array_interface__") or type(x) in _SCALAR_TYPE_SET
                    or isinstance(x, numpy.ndarray)):
                return NotImplemented
        if name in _COMPARISONS:  # CuPy's workaround for numpy/numpy#12142
            inputs = tuple(x.item() if isinstance(x, numpy.ndarray) and x.ndim == 0 else x
                           for x in inputs)
        return cp_ufunc(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        try:
            module = functools.reduce(getattr, func.__module__.split(".")[1:], root_module())
            cupy_func = getattr(module, func.__name__)
        except AttributeError:
            return NotImplemented
        if cupy_func is func:
            return NotImplemented
        for t in types:
            if t not in (ndarray, numpy.ndarray):
                return NotImplemented
        return cupy_func(*args, **kwargs)


_SCALAR_TYPE_SET = frozenset([bool, int, float, complex] + [
    numpy.dtype(c).type for c in "?bhilqBHILQefdFD"])


def _raise(exc):
    raise exc


def _from_host(host):
    """Unpickle: a device array with the contents of ``host``."""
    return wrap(numpy.array(host, copy=True))


def _fill_value(value):
    """A value CuPy accepts for ``x[...] = value`` / ``fill``: device array or scalar."""
    if type(value) is ndarray:
        return value._a
    if isinstance(value, numpy.ndarray):
        if value.shape != ():
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        return value.item()
    if not is_scalar(value):
        raise unsupported(value)
    return value


def _scatter(np_ufunc, target, slices, value):
    if type(value) is not ndarray and not is_scalar(value):
        raise unsupported(value)
    key = slices if type(slices) is tuple else (slices,)
    key = tuple(k._a if type(k) is ndarray else k for k in key)
    np_ufunc.at(target._a, key, value._a if type(value) is ndarray else value)
    _counters.launch()


_HANDWRITTEN = set(vars(ndarray)) | {"view", "copy"}
for _name, _entry in _manifest.MANIFEST["classes"]["cupy.ndarray"].items():
    if _entry["kind"] == "method" and _name not in _HANDWRITTEN and not _name.startswith("__"):
        setattr(ndarray, _name, _method_forwarder(_name))


def _view(self, dtype=None, type=None):
    if type is not None:
        raise no_stand_in("cupy.ndarray.view(type=...)")
    return wrap(self._a.view() if dtype is None else self._a.view(dtype), self._device_id)


ndarray.view = _view
ndarray.copy = _method_forwarder("copy")
ndarray.__module__ = "cupy"


# ------------------------------------------------------------------ operators through ufuncs
def _binary(name, reflected=False):
    if reflected:
        def op(self, other):
            return getattr(root_module(), name)(other, self)
    else:
        def op(self, other):
            return getattr(root_module(), name)(self, other)
    return op


def _inplace(name):
    def op(self, other):
        getattr(root_module(), name)(self, other, out=self)
        return self
    return op


for _dunder, _ufunc in {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "divide",
                        "floordiv": "floor_divide", "mod": "remainder", "pow": "power",
                        "and": "bitwise_and", "or": "bitwise_or", "xor": "bitwise_xor",
                        "lshift": "left_shift", "rshift": "right_shift"}.items():
    setattr(ndarray, f"__{_dunder}__", _binary(_ufunc))
    setattr(ndarray, f"__r{_dunder}__", _binary(_ufunc, reflected=True))
    setattr(ndarray, f"__i{_dunder}__", _inplace(_ufunc))
for _dunder, _ufunc in {"lt": "less", "le": "less_equal", "gt": "greater",
                        "ge": "greater_equal", "eq": "equal", "ne": "not_equal"}.items():
    setattr(ndarray, f"__{_dunder}__", _binary(_ufunc))
for _dunder, _ufunc in {"neg": "negative", "pos": "positive", "abs": "absolute",
                        "invert": "invert"}.items():
    setattr(ndarray, f"__{_dunder}__", (lambda u: lambda self: getattr(root_module(), u)(self))(_ufunc))
ndarray.__matmul__ = _binary("matmul")
ndarray.__rmatmul__ = _binary("matmul", reflected=True)
ndarray.__divmod__ = _binary("divmod")


# ------------------------------------------------------------------ ufuncs
class ufunc:
    """A CuPy ufunc computed by NumPy's: CuPy's keywords, operand rules and method support."""

    def __init__(self, np_ufunc, entry):
        self._np = np_ufunc
        self.name = self.__name__ = entry["name"]
        self.nin, self.nout = entry["nin"], entry["nout"]
        self.nargs = self.nin + self.nout
        self._at = entry["at"]
        self._scatter_op = name_without_prefix(self.name) if self._at else None

    def __repr__(self):
        return f"<ufunc '{self.name}'>"

    def __call__(self, *args, **kwargs):
        out = kwargs.pop("out", None)
        where = kwargs.pop("_where", None)
        dtype = kwargs.pop("dtype", None)
        casting = kwargs.pop("casting", "same_kind")
        if kwargs:
            raise TypeError(f"Wrong arguments {kwargs}")
        if not self.nin <= len(args) <= self.nargs:
            raise TypeError(f"Wrong number of arguments for {self.name!r}. It must be either "
                            f"{self.nin} or {self.nargs} (with outputs), but given {len(args)}.")
        in_args, out_args = args[:self.nin], args[self.nin:]
        if out is not None:
            if out_args:
                raise ValueError("Cannot specify 'out' as both a positional and keyword argument")
            if isinstance(out, tuple):
                if len(out) != self.nout:
                    raise ValueError("The 'out' tuple must have exactly one entry per ufunc output")
                out_args = out
            else:
                if self.nout != 1:
                    raise ValueError("'out' must be a tuple of arrays")
                out_args = (out,)
        memo = {}
        host_in = [_operand(a, memo) for a in in_args]
        host_out = []
        for o in out_args:
            if o is not None and type(o) is not ndarray:
                _operand(o, memo)
                raise TypeError("Output arguments type must be cupy.ndarray")
            host_out.append(None if o is None else _operand(o, memo))
        extra = {} if where is None else {"where": _operand(where, memo)}
        if any(o is not None for o in host_out):
            extra["out"] = tuple(host_out) + (None,) * (self.nout - len(host_out))
        result = self._np(*host_in, dtype=dtype, casting=casting, **extra)
        _counters.launch()
        return wrap_result(result, memo)

    def at(self, a, indices, b=None):
        """``a[indices] op= b`` without buffering (only the ufuncs CuPy has a scatter op for)."""
        if not self._at:
            raise NotImplementedError(f"`{self.name}.at` is not supported yet")
        _scatter(self._np, a, indices, b)

    def reduce(self, array, axis=0, dtype=None, out=None, keepdims=False):
        """Only ``add`` (sum) and ``multiply`` (prod), as in CuPy."""
        if self.name == "cupy_add":
            return array.sum(axis, dtype, out, keepdims)
        if self.name == "cupy_multiply":
            return array.prod(axis, dtype, out, keepdims)
        raise NotImplementedError(f"`{self.name}.reduce` is not supported yet")

    def accumulate(self, array, axis=0, dtype=None, out=None):
        """Only ``add`` (cumsum) and ``multiply`` (cumprod), as in CuPy."""
        if self.name == "cupy_add":
            return array.cumsum(axis, dtype, out)
        if self.name == "cupy_multiply":
            return array.cumprod(axis, dtype, out)
        raise NotImplementedError(f"`{self.name}.accumulate` is not supported yet")

    def reduceat(self, array, indices, axis=0, dtype=None, out=None):
        """Only ``add``, as in CuPy."""
        if self.name != "cupy_add":
            raise NotImplementedError(f"`{self.name}.reduceat` is not supported yet")
        memo = {}
        result = numpy.add.reduceat(_operand(array, memo), unwrap(indices, memo, "reduceat"), axis,
                                    dtype, unwrap(out, memo, "reduceat"))
        _counters.launch()
        return wrap_result(result, memo)

    def outer(self, A, B, **kwargs):
        """Apply to all pairs (host inputs are copied to the device first, as in CuPy)."""
        cupy = root_module()
        A, B = cupy.array(A), cupy.array(B)
        return self(A.reshape(A.shape + (1,) * B.ndim), B.reshape((1,) * A.ndim + B.shape), **kwargs)


def name_without_prefix(name):
    """``cupy_add`` -> ``add``."""
    return name[len("cupy_"):] if name.startswith("cupy_") else name


def _operand(value, memo):
    """A kernel operand: a device array (its host array) or a scalar; anything else refused."""
    if type(value) is ndarray:
        memo[id(value._a)] = value
        return value._a
    if is_scalar(value):
        return value
    raise unsupported(value)


class gufunc:
    """``cupy.matmul``: device arrays only, NumPy's matmul underneath."""

    _KEYWORDS = ("out", "dtype", "casting", "axes", "axis", "keepdims", "order", "signature")

    def __init__(self, np_func, name):
        self._np = np_func
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        unknown = set(kwargs) - set(self._KEYWORDS)
        if unknown:
            raise TypeError(f"{self.__name__}() got unexpected keyword arguments {sorted(unknown)}")
        memo = {}
        host = [_operand(a, memo) if type(a) is ndarray else _raise(unsupported(a)) for a in args]
        if kwargs.get("out") is not None:
            kwargs["out"] = _operand(kwargs["out"], memo)
        result = self._np(*host, **kwargs)
        _counters.launch()
        return wrap_result(result, memo)


def check_device_array(value, what):
    """Raise CuPy's TypeError unless ``value`` is a device array."""
    if type(value) is not ndarray:
        raise TypeError(f"Argument '{what}' has incorrect type (expected cupy.ndarray, "
                        f"got {type(value).__name__})")

