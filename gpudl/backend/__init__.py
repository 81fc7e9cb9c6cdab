"""The only place where gpudl touches NumPy or CuPy for computation.

It picks the backend (``GPUDL_BACKEND=numpy|cupy|auto``), maps arrays to devices, moves
arrays between host and device, owns the random generators and exposes the fused ops
(``backend_of(array).fused``). Everything above it gets its array module from here.
"""
import numpy

from .device import CPU, Device
from .numpy_backend import NumpyBackend
from .selection import VALID_BACKENDS, BackendError, cupy_gpu_usable, requested_backend, require_cupy, resolve

NUMPY = NumpyBackend()
_backend_by_array_type = {numpy.ndarray: NUMPY}
_cupy_backend = None
_default_device = None

float16 = numpy.dtype("float16")
float32 = numpy.dtype("float32")
float64 = numpy.dtype("float64")
int8 = numpy.dtype("int8")
int16 = numpy.dtype("int16")
int32 = numpy.dtype("int32")
int64 = numpy.dtype("int64")
uint8 = numpy.dtype("uint8")
bool_ = numpy.dtype("bool")
DEFAULT_FLOAT = float32
FLOAT_DTYPES = (float16, float32, float64)
_DTYPE_ALIASES = {"half": float16, "float": float32, "double": float64, "long": int64, "int": int64}


def get_cupy_backend():
    """The CuPy backend, created on first use (raises BackendError if no usable GPU)."""
    global _cupy_backend
    if _cupy_backend is None:
        require_cupy("a CUDA device")
        from .cupy_backend import CupyBackend  # binds the submodule as gpudl.backend.cupy_backend
        _cupy_backend = CupyBackend()
        _backend_by_array_type[_cupy_backend.array_type] = _cupy_backend
    return _cupy_backend


def backend_of(array):
    """The backend owning ``array`` (a NumPy or CuPy array, or a NumPy scalar)."""
    backend = _backend_by_array_type.get(type(array))
    if backend is not None:
        return backend
    if isinstance(array, (numpy.generic, numpy.ndarray)):
        return NUMPY
    raise TypeError(f"expected a NumPy or CuPy array, got {type(array).__name__}")


def installed_cupy_version():
    """CuPy's version string if it is installed (usable GPU or not), else None."""
    try:
        import cupy
    except ImportError:
        return None
    return cupy.__version__


def backend_for(device: Device):
    """The backend whose arrays live on ``device``."""
    return NUMPY if device.kind == "cpu" else get_cupy_backend()


def is_array(value) -> bool:
    """True for arrays of any loaded backend."""
    return type(value) in _backend_by_array_type or isinstance(value, numpy.ndarray)


def device_of(array) -> Device:
    """The device ``array`` lives on."""
    return backend_of(array).device_of(array)


def default_device() -> Device:
    """The device new tensors go to, chosen once from ``GPUDL_BACKEND``."""
    global _default_device
    if _default_device is None:
        _default_device = CPU if resolve(requested_backend()) == "numpy" else Device("cuda", 0)
    return _default_device


def set_default_device(device) -> None:
    """Make ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``) the default for new tensors."""
    global _default_device
    device = Device.parse(device)
    backend_for(device)
    _default_device = device


def get_device(device=None) -> Device:
    """Parse ``device``; None means the default device. Raises BackendError if it cannot be used."""
    if device is None:
        return default_device()
    device = Device.parse(device)
    backend_for(device)
    return device


def dtype(spec) -> numpy.dtype:
    """Turn a NumPy dtype, a string (``"float32"``) or an alias (``gpudl.float32``) into a numpy.dtype."""
    if isinstance(spec, numpy.dtype):
        return spec
    if isinstance(spec, str) and spec in _DTYPE_ALIASES:
        return _DTYPE_ALIASES[spec]
    try:
        return numpy.dtype(spec)
    except TypeError:
        raise TypeError(f"unknown dtype {spec!r}; use e.g. 'float32', gpudl.float64 or numpy.int64") from None


def is_float_dtype(dt) -> bool:
    """True for float16, float32 and float64."""
    return dt.kind == "f"


def host_array_from_data(data, dtype_=None):
    """A NumPy array from Python data with gpudl's defaults: floats -> float32, ints -> int64."""
    if isinstance(data, numpy.ndarray):
        return data if dtype_ is None else data.astype(dtype_, copy=False)
    array = numpy.asarray(data, dtype=dtype_)
    if dtype_ is None:
        if array.dtype == numpy.float64 and not isinstance(data, numpy.generic):
            array = array.astype(DEFAULT_FLOAT)
        elif array.dtype.kind in "iu" and not isinstance(data, numpy.generic):
            array = array.astype(int64, copy=False)
        elif array.dtype.kind not in "biuf":
            raise TypeError(f"cannot make a tensor from data of type {type(data).__name__} "
                            f"(NumPy dtype {array.dtype})")
    return array


def to_device(array, device: Device, copy: bool = False):
    """``array`` (of any backend) placed on ``device``; copies only when it has to (or ``copy``)."""
    source = backend_of(array)
    if source.device_of(array) == device:
        return array.copy() if copy else array
    host = source.to_host(array)
    return backend_for(device).from_host(host, device, copy=copy or host is array)


def to_host(array):
    """A NumPy array with the contents of ``array`` (no copy if it already is one)."""
    return backend_of(array).to_host(array)


def item(array):
    """The value of the one-element ``array`` as a Python number (on the GPU a host sync, which
    also raises this thread's pending device errors)."""
    return backend_of(array).item(array)


_device_counters = [None]


def set_device_counters(counters) -> None:
    """Install ``counters()``, returning ``(kernel launches, device-to-host syncs)`` made so far
    by the calling thread (monotonic totals), for ``gpudl.profile()`` and ``gpudl bench``; None
    removes it. CuPy has no launch hook: a CUPTI reader or the CuPy test double
    (``tests/cupy_double``) can install one. Without it launches and syncs are not counted."""
    _device_counters[0] = counters


def device_counters():
    """``(kernel launches, device-to-host syncs)`` so far on this thread, or None when no
    counter is installed (see :func:`set_device_counters`)."""
    counters = _device_counters[0]
    return None if counters is None else counters()


def check_device_errors() -> None:
    """Raise this thread's first pending device-side error, as the host would have raised it.

    On the GPU, invalid class targets and embedding indices are checked by a kernel that sets an
    error flag instead of stopping (CuPy would silently wrap the index); the flags are read at
    the thread's next host synchronisation (``.item()``, ``.numpy()``, ``float()``, ``bool()``,
    ``synchronize``) and raised as the IndexError NumPy raises. Call this to read them earlier
    (one small device-to-host copy when checks are pending; nothing on the CPU).
    ``GPUDL_SYNC_CHECKS=1`` reads them after every checking op instead (a debug mode).
    """
    if _cupy_backend is not None:
        _cupy_backend.fused.raise_pending_device_errors()


def new_array(device: Device, factory: str, *args, **kwargs):
    """Call the array module's ``factory`` (``zeros``, ``ones``, ...) to create an array on ``device``."""
    backend = backend_for(device)
    with backend.context(device):
        return getattr(backend.xp, factory)(*args, **kwargs)


from .random import host_generator, manual_seed, new_generator, next_dropout_key, seed_dropout  # noqa: E402

__all__ = [
    "BackendError", "CPU", "Device", "NUMPY", "VALID_BACKENDS", "backend_for", "backend_of", "check_device_errors",
    "device_counters", "get_cupy_backend", "cupy_gpu_usable", "default_device", "device_of", "dtype", "get_device",
    "host_array_from_data", "installed_cupy_version", "host_generator", "is_array", "item", "manual_seed", "new_array",
    "set_device_counters",
    "new_generator", "next_dropout_key", "seed_dropout", "set_default_device", "to_device", "to_host",
]
