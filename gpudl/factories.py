"""Creating tensors: ``tensor`` from data, and the factories zeros, ones, full, arange, rand, randn...

Random tensors are drawn from the host generator and then moved, so a seed gives the same
numbers on either backend.
"""
from . import backend as _backend
from .tensor import Tensor


def _shape(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(int(n) for n in shape)
    if any(n < 0 for n in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    return shape


def _float_dtype(dtype):
    return _backend.DEFAULT_FLOAT if dtype is None else _backend.dtype(dtype)


def tensor(data, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A new tensor holding a copy of ``data``: Python floats become float32, Python ints int64,
    NumPy/CuPy arrays keep their dtype; ``dtype=`` overrides."""
    dtype = None if dtype is None else _backend.dtype(dtype)
    if isinstance(data, Tensor):
        data = data.data
    if _backend.is_array(data):
        # host data goes to the default device, as lists do; device arrays stay where they are
        if device is not None:
            target = _backend.get_device(device)
        elif _backend.backend_of(data) is _backend.NUMPY:
            target = _backend.default_device()
        else:
            target = _backend.device_of(data)
        array = _backend.to_device(data, target, copy=True)
        if dtype is not None:
            array = array.astype(dtype, copy=False)
    else:
        target = _backend.get_device(device)
        array = _backend.to_device(_backend.host_array_from_data(data, dtype), target, copy=True)
    return Tensor(array, requires_grad=requires_grad)


def from_numpy(array) -> Tensor:
    """A CPU tensor that shares memory with the NumPy ``array`` (writes to one show in the other), as
    PyTorch's ``from_numpy``; the dtype is kept."""
    if not isinstance(array, _backend.NUMPY.array_type):
        raise TypeError(f"from_numpy: expected a NumPy array, got {type(array).__name__}")
    return Tensor(array)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """``data`` as a tensor, without copying when it can (PyTorch's ``as_tensor``): a tensor or array
    already on ``device`` with ``dtype`` is shared (a tensor is returned as it is), anything else is
    converted as by :func:`tensor`. Without ``device``, arrays stay where they are."""
    dtype = None if dtype is None else _backend.dtype(dtype)
    if isinstance(data, Tensor):
        return data.to(device, dtype=dtype)
    if _backend.is_array(data):
        target = _backend.device_of(data) if device is None else _backend.get_device(device)
        array = _backend.to_device(data, target)
        return Tensor(array if dtype is None else array.astype(dtype, copy=False))
    return tensor(data, dtype=dtype, device=device)


def device(type, index=None) -> _backend.Device:  # noqa: A002  (PyTorch's argument name)
    """PyTorch's ``device(...)``: ``device("cuda:0")``, ``device("cuda", 1)``, ``device("cpu")``."""
    if index is not None:
        type = f"{type}:{int(index)}"  # noqa: A001
    return _backend.Device.parse(type)


def _filled(factory, shape, dtype, device, requires_grad, *fill):
    array = _backend.new_array(_backend.get_device(device), factory, shape, *fill, dtype=dtype)
    return Tensor(array, requires_grad=requires_grad)


def zeros(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of zeros (float32 unless ``dtype``)."""
    return _filled("zeros", _shape(shape), _float_dtype(dtype), device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of ones (float32 unless ``dtype``)."""
    return _filled("ones", _shape(shape), _float_dtype(dtype), device, requires_grad)


def empty(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """An uninitialised tensor (float32 unless ``dtype``)."""
    return _filled("empty", _shape(shape), _float_dtype(dtype), device, requires_grad)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor filled with ``fill_value``; the dtype follows the value (float -> float32, int -> int64)."""
    dtype = _backend.host_array_from_data(fill_value).dtype if dtype is None else _backend.dtype(dtype)
    return _filled("full", _shape((shape,)), dtype, device, requires_grad, fill_value)


def _like(reference, dtype, device):
    return (reference.dtype if dtype is None else dtype), (reference.device if device is None else device)


def zeros_like(x, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Zeros with the shape (and, unless given, dtype and device) of ``x``."""
    dtype, device = _like(x, dtype, device)
    return zeros(x.shape, dtype=dtype, device=device, requires_grad=requires_grad)


def ones_like(x, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Ones with the shape (and, unless given, dtype and device) of ``x``."""
    dtype, device = _like(x, dtype, device)
    return ones(x.shape, dtype=dtype, device=device, requires_grad=requires_grad)


def full_like(x, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    """``fill_value`` with the shape (and, unless given, dtype and device) of ``x``."""
    dtype, device = _like(x, dtype, device)
    return full(x.shape, fill_value, dtype=dtype, device=device, requires_grad=requires_grad)


def arange(start, stop=None, step=1, dtype=None, device=None) -> Tensor:
    """Evenly spaced values in ``[start, stop)``: int64 for integer arguments, else float32."""
    if stop is None:
        start, stop = 0, start
    if step == 0:
        raise ValueError("arange: step must not be zero")
    if dtype is None:
        integral = all(isinstance(v, int) for v in (start, stop, step))
        dtype = _backend.int64 if integral else _backend.float32
    return Tensor(_backend.new_array(_backend.get_device(device), "arange", start, stop, step,
                                     dtype=_backend.dtype(dtype)))


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False) -> Tensor:
    """``steps`` evenly spaced values from ``start`` to ``end``, both included (float32 unless ``dtype``)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"linspace: steps must be a non-negative integer, got {steps!r}")
    array = _backend.new_array(_backend.get_device(device), "linspace", start, end, steps, dtype=_float_dtype(dtype))
    return Tensor(array, requires_grad=requires_grad)


def _random(draw, shape, dtype, device, requires_grad):
    dtype = _float_dtype(dtype)
    host = draw(_backend.host_generator(), _shape(shape)).astype(dtype, copy=False)
    return Tensor(_backend.to_device(host, _backend.get_device(device), copy=False), requires_grad=requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform samples in [0, 1) from the seeded host generator."""
    return _random(lambda g, s: g.random(s), shape, dtype, device, requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal samples from the seeded host generator."""
    return _random(lambda g, s: g.standard_normal(s), shape, dtype, device, requires_grad)


def randperm(n, dtype=None, device=None) -> Tensor:
    """A random permutation of ``0 .. n - 1`` (int64 unless ``dtype``) from the seeded host generator."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"randperm: n must be a non-negative integer, got {n!r}")
    host = _backend.host_generator().permutation(n)
    return Tensor(_backend.to_device(host.astype(_backend.dtype(dtype or "int64")), _backend.get_device(device)))


def randint(low, high, shape, dtype=None, device=None) -> Tensor:
    """Integers in ``[low, high)`` (int64 unless ``dtype``) from the seeded host generator."""
    host = _backend.host_generator().integers(low, high, size=_shape((shape,)))
    return Tensor(_backend.to_device(host.astype(_backend.dtype(dtype or "int64")), _backend.get_device(device)))
