"""A CPU test double for CuPy: ``install()`` makes ``import cupy`` give it (tests only).

It runs gpudl's CuPy backend on the host to catch Python-side GPU-path bugs: implicit
NumPy<->CuPy conversions, functions and keywords CuPy lacks, a missing ``.get()``, kernel argument
and broadcasting mistakes, 0-d arrays where scalars were expected. The namespace comes from
``manifest.json`` (the pinned real CuPy): names CuPy lacks are absent, signatures are CuPy's,
names without a CPU stand-in raise :class:`NoStandInError`. See README.md for what it proves
and what it cannot.
"""
import contextlib
import importlib.abc
import importlib.machinery
import sys
import types

import numpy

from . import _core, _counters, _cuda, _kernels, _nccl, _random
from ._counters import Launch
from ._manifest import CUPY_VERSION, MANIFEST, NoStandInError, Signature, no_stand_in, \
    resolve_numpy, signature

_ROOTS = ("cupy", "cupyx", "cupy_backends")
_NUMPY_TWIN = {"cupy": numpy, "cupy.linalg": numpy.linalg, "cupy.fft": numpy.fft,
               "cupy.lib.stride_tricks": numpy.lib.stride_tricks}
# cupy.* functions that take host arrays without a transfer (metadata or *_like templates).
_HOST_OK = {"zeros_like", "ones_like", "empty_like", "full_like", "shape", "ndim", "size",
            "result_type", "can_cast", "isscalar", "min_scalar_type", "iscomplexobj",
            "isrealobj"}
# Allocation only: no kernel runs.
_NO_KERNEL = {"empty", "empty_like"}
# The result's size depends on the data, so CuPy reads a count back from the device.
_SYNCING = {"nonzero", "argwhere", "flatnonzero", "unique", "extract", "compress", "where"}
# NumPy returns a Python number where CuPy returns a 0-d device array.
_PYTHON_RESULT_AS_ARRAY = {"allclose", "array_equal", "array_equiv", "count_nonzero"}


class NoStandInImportError(ImportError):
    """Importing a real-CuPy module the double has no stand-in for (CuPy internals, NVRTC...)."""


class _NoStandInAttribute(AttributeError):
    """A submodule CuPy has but the double does not build."""


_hooks = {"import_failure": NoStandInImportError}


@contextlib.contextmanager
def import_failures_raise(factory):
    """Within the block, importing a module without a stand-in raises ``factory(message)``
    (the pytest plugin turns such imports during collection into module skips)."""
    previous = _hooks["import_failure"]
    _hooks["import_failure"] = factory
    try:
        yield
    finally:
        _hooks["import_failure"] = previous


def _import_failure(name):
    return _hooks["import_failure"](
        f"cupy_double: {name} is a module of the real CuPy {CUPY_VERSION} (internals, NVRTC, "
        "drivers) with no CPU stand-in; this code needs the real CuPy and a GPU")


# ---------------------------------------------------------------- forwarders and stubs
def forwarder(qualname, np_func):
    """``cupy.f`` as NumPy's ``f``: CuPy's signature, device arrays in, device results out."""
    sig = signature(qualname)
    name = qualname.rpartition(".")[2]
    host_ok = name in _HOST_OK

    def function(*args, **kwargs):
        if sig is not None:
            args, kwargs = sig.bind(args, kwargs)
        memo = {}
        host_args = [_core.unwrap(a, memo, qualname, host_ok) for a in args]
        host_kwargs = {k: _core.unwrap(v, memo, qualname, host_ok) for k, v in kwargs.items()}
        result = np_func(*host_args, **host_kwargs)
        if name in _SYNCING and not (name == "where" and len(args) == 3):
            _counters.sync(qualname)
        if name not in _NO_KERNEL and _core.fresh(result, memo):
            _counters.launch()
        if name in _PYTHON_RESULT_AS_ARRAY and isinstance(result, (bool, int)):
            result = numpy.asarray(result)
        return _core.wrap_result(result, memo)

    function.__name__ = name
    function.__qualname__ = qualname
    function.__module__ = qualname.rpartition(".")[0]
    function.__doc__ = f"{qualname}: NumPy's {getattr(np_func, '__name__', name)} on device arrays."
    if sig is not None:
        function.__signature__ = sig.signature  # inspect.signature() gives CuPy's
    return function


def _stub_function(qualname):
    def function(*args, **kwargs):
        raise no_stand_in(qualname)
    function.__name__ = qualname.rpartition(".")[2]
    function.__qualname__ = qualname
    return function


def _stub_class(qualname):
    def __init__(self, *args, **kwargs):
        raise no_stand_in(qualname)
    return type(qualname.rpartition(".")[2], (), {"__init__": __init__, "__module__":
                                                  qualname.rpartition(".")[0]})


class _StubObject:
    """An object CuPy has (``cupy.c_``, ``cupy.mgrid``...) that the double cannot run."""

    def __init__(self, qualname):
        self._qualname = qualname

    def __getitem__(self, key):
        raise no_stand_in(self._qualname)

    __call__ = __getitem__


# ---------------------------------------------------------------- hand-written cupy.* functions
def _host_tree(obj):
    """Nested lists/tuples with device arrays replaced by host copies (``cupy.array`` accepts them)."""
    if type(obj) is _core.ndarray:
        return obj.get()
    if type(obj) in (list, tuple):
        return [_host_tree(o) for o in obj]
    return obj


def _from_host_data(obj, dtype, order, ndmin=0):
    host = numpy.array(_host_tree(obj), dtype=dtype, order=order or "K", copy=True, ndmin=ndmin)
    if host.dtype.kind not in "biufc":
        raise ValueError(f"Unsupported dtype {host.dtype}")
    return _core.wrap(host)


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    """A device array from ``a``; host data is always copied to the device."""
    if type(a) is _core.ndarray:
        same = dtype is None or numpy.dtype(dtype) == a.dtype
        if same and not copy:
            return a
        if copy is False:
            raise ValueError("Unable to avoid copy while creating an array as requested.")
        return a.astype(a.dtype if dtype is None else dtype, order=order or "K")
    if copy is False:
        raise ValueError("Unable to avoid copy while creating an array as requested.")
    return _from_host_data(a, dtype, order)


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    """A device array from ``obj`` (device arrays, host arrays, nested sequences of both)."""
    if subok:
        raise NotImplementedError
    if type(obj) is _core.ndarray:
        out = obj.astype(obj.dtype if dtype is None else dtype, order=order, copy=copy)
        if out.ndim < ndmin:
            out = out.reshape((1,) * (ndmin - out.ndim) + out.shape)
        return out
    return _from_host_data(obj, dtype, order, ndmin)


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """A host copy of a device array (other inputs go through ``numpy.asarray``)."""
    if type(a) is _core.ndarray:
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    return numpy.asarray(a, order=order)


def counters():
    """This thread's launch and sync counts and recorded kernel launches (test-only API, see
    ``_counters``; not part of CuPy's namespace)."""
    return _counters.counters()


def launch_and_sync_counts():
    """``(device operations, device-to-host syncs)`` so far on this thread: the counter gpudl's
    profiler and benchmark read (``gpudl.backend.set_device_counters``)."""
    state = _counters.counters()
    return state.launches, state.syncs


def connect_gpudl():
    """Install the double's counts as gpudl's device counters (when gpudl is importable)."""
    try:
        from gpudl import backend
    except ImportError:
        return
    backend.set_device_counters(launch_and_sync_counts)


def get_array_module(*args):
    """``cupy`` if any argument is a device array, else ``numpy``."""
    for arg in args:
        if type(arg) is _core.ndarray:
            return _core.root_module()
    return numpy


def fuse(*args, **kwargs):
    """``cupy.fuse``: the function runs unfused (the fused kernel is not emulated)."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda function: function


def memoize(for_each_device=False):
    """``cupy.memoize``: no caching here."""
    return lambda function: function


@contextlib.contextmanager
def _errstate(**kwargs):
    signature("cupyx.errstate").bind((), kwargs)
    yield


def _scatter(op):
    def scatter(a, slices, value):
        _core.check_device_array(a, "a")
        getattr(a, f"scatter_{op}")(slices, value)
    scatter.__name__ = f"scatter_{op}"
    return scatter


def _pinned(np_func):
    def pinned(*args, **kwargs):
        return np_func(*(_host_tree(a) if type(a) is _core.ndarray else a for a in args), **kwargs)
    pinned.__name__ = np_func.__name__ + "_pinned"
    return pinned


def _stable(qualname, np_func):
    """CuPy's sorts are always stable (``kind`` may only be None or "stable"): so are the double's."""
    forward = forwarder(qualname, lambda a, axis=-1, kind=None: np_func(a, axis=axis, kind="stable"))
    forward.__doc__ = f"{qualname}: NumPy's stable {np_func.__name__} on device arrays."
    return forward


_HANDWRITTEN = {
    "cupy": {"argsort": _stable("cupy.argsort", numpy.argsort), "sort": _stable("cupy.sort", numpy.sort),
             "ndarray": _core.ndarray, "ufunc": _core.ufunc, "asarray": asarray, "array": array,
             "asnumpy": asnumpy, "get_array_module": get_array_module, "fuse": fuse,
             "memoize": memoize, "clear_memo": lambda: None, "is_available": lambda: True,
             "show_config": lambda *a, **k: print(f"cupy_double (CuPy {CUPY_VERSION} stand-in)"),
             "ElementwiseKernel": _kernels.ElementwiseKernel,
             "ReductionKernel": _kernels.ReductionKernel, "RawKernel": _kernels.RawKernel,
             "get_default_memory_pool": lambda: _cuda.DEFAULT_POOL,
             "get_default_pinned_memory_pool": lambda: _cuda.DEFAULT_PINNED_POOL},
    "cupy.random": _random.HANDWRITTEN,
    "cupy.cuda": {"Device": _cuda.Device, "Stream": _cuda.Stream, "Event": _cuda.Event,
                  "MemoryPool": _cuda.MemoryPool, "PinnedMemoryPool": _cuda.PinnedMemoryPool,
                  "MemoryPointer": _core.MemoryPointer, "is_available": lambda: True,
                  "get_current_stream": _cuda.get_current_stream,
                  "get_elapsed_time": _cuda.get_elapsed_time,
                  "get_device_id": _cuda.runtime_getDevice},
    "cupy.cuda.memory": {"OutOfMemoryError": _cuda.OutOfMemoryError,
                         "MemoryPool": _cuda.MemoryPool, "MemoryPointer": _core.MemoryPointer,
                         "PinnedMemoryPool": _cuda.PinnedMemoryPool},
    "cupy.cuda.device": {"Device": _cuda.Device, "get_device_id": _cuda.runtime_getDevice},
    "cupy.cuda.stream": {"Stream": _cuda.Stream, "Event": _cuda.Event,
                         "get_current_stream": _cuda.get_current_stream,
                         "get_elapsed_time": _cuda.get_elapsed_time},
    "cupy.cuda.runtime": {"CUDARuntimeError": _cuda.CUDARuntimeError, **{
        name[len("runtime_"):]: obj for name, obj in vars(_cuda).items()
        if name.startswith("runtime_")}},
    "cupyx": {"scatter_add": _scatter("add"), "scatter_max": _scatter("max"),
              "scatter_min": _scatter("min"), "errstate": _errstate,
              "empty_pinned": _pinned(numpy.empty), "zeros_pinned": _pinned(numpy.zeros),
              "empty_like_pinned": _pinned(numpy.empty_like),
              "zeros_like_pinned": _pinned(numpy.zeros_like)},
    "cupyx.profiler": {"time_range": _cuda.time_range},
}


def _entry_object(module_name, name, entry):
    qualname = f"{module_name}.{name}"
    handwritten = _HANDWRITTEN.get(module_name, {})
    if name in handwritten:
        return handwritten[name]
    kind = entry["kind"]
    if kind == "value":
        return entry["value"]
    if kind == "numpy":
        obj = resolve_numpy(entry["path"])
        return obj if obj is not None else _stub_function(qualname)
    if module_name == "cupy.cuda.nvtx" and kind == "function":
        return _cuda.nvtx_noop
    twin = _NUMPY_TWIN.get(module_name)
    np_obj = getattr(twin, name, None) if twin is not None else None
    if kind == "ufunc":
        return _core.ufunc(np_obj, entry) if isinstance(np_obj, numpy.ufunc) else \
            _stub_function(qualname)
    if kind == "gufunc":
        return _core.gufunc(np_obj or numpy.matmul, qualname)
    if kind == "function":
        if module_name == "cupy.random":
            return _random.module_function(name)
        return forwarder(qualname, np_obj) if callable(np_obj) else _stub_function(qualname)
    if kind == "class":
        return _stub_class(qualname)
    return _StubObject(qualname)


def _module_getattr(module_name, absent):
    def __getattr__(name):
        if name in absent:
            raise _NoStandInAttribute(
                f"cupy_double: {module_name}.{name} exists in CuPy {CUPY_VERSION} but has no CPU "
                "stand-in (it needs the real CuPy and a GPU)")
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
    return __getattr__


_modules = {}


def build():
    """The double's ``cupy`` module (its submodules built too); does not touch ``sys.modules``."""
    if _modules:
        return _modules["cupy"]
    for module_name in MANIFEST["modules"]:
        module = types.ModuleType(module_name, f"{module_name} (cupy_double CPU stand-in)")
        module.__file__ = __file__
        module.__path__ = []
        _modules[module_name] = module
    for module_name, entries in MANIFEST["modules"].items():
        module = _modules[module_name]
        absent = set()
        for name, entry in entries.items():
            if entry["kind"] != "module":
                setattr(module, name, _entry_object(module_name, name, entry))
            elif f"{module_name}.{name}" in _modules:
                setattr(module, name, _modules[f"{module_name}.{name}"])
            elif entry["module"].split(".")[0] in _ROOTS:
                absent.add(name)
        module.__getattr__ = _module_getattr(module_name, absent)
    root = _modules["cupy"]
    root.__version__ = CUPY_VERSION
    _core._state.update(root=root, pool=_cuda.DEFAULT_POOL, device=_cuda.Device)
    _nccl.register(_modules)
    return root


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the double's modules; other CuPy modules fail clearly instead of loading."""

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] not in _ROOTS:
            return None
        if fullname in _modules:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        if fullname in MANIFEST["real_modules"]:
            raise _import_failure(fullname)
        raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)

    def create_module(self, spec):
        return _modules[spec.name]

    def exec_module(self, module):
        pass


_finder = _Finder()


def installed():
    """True while the double is installed as ``cupy``."""
    return _finder in sys.meta_path


def install():
    """Make ``import cupy`` / ``cupyx`` (and their submodules) give the double."""
    if installed():
        return _modules["cupy"]
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in _ROOTS)
    if loaded:
        raise RuntimeError(f"cupy_double: the real CuPy is already imported ({loaded[0]}); "
                           "install the double before anything imports cupy")
    root = build()
    sys.meta_path.insert(0, _finder)
    sys.modules.update(_modules)
    return root


def uninstall():
    """Undo :func:`install` (modules that imported the double keep their reference)."""
    if installed():
        sys.meta_path.remove(_finder)
        for name in _modules:
            sys.modules.pop(name, None)


__all__ = ["CUPY_VERSION", "Launch", "NoStandInError", "NoStandInImportError", "Signature", "build", "connect_gpudl",
           "counters", "launch_and_sync_counts",
           "forwarder", "import_failures_raise", "install", "installed", "uninstall"]
