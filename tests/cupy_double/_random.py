"""``cupy.random``: CuPy's functions and method sets, values drawn by NumPy's generators.

Only the names CuPy has exist (``Generator`` has no ``normal``, ``choice`` or ``permutation``);
signatures are CuPy's, ``dtype=`` is honoured. The streams differ from a GPU's (cuRAND).
"""
import functools
import inspect

import numpy

from . import _core, _manifest

_VARIADIC_SIZE = {"rand", "randn"}


def _call(qualname, np_method, name, args, kwargs, method=False):
    """Call NumPy's ``name`` with CuPy's signature; cast to ``dtype``; result on the device."""
    if name in _VARIADIC_SIZE:
        dtype = kwargs.pop("dtype", float)
        if kwargs:
            raise TypeError(f"{name}() got unexpected keyword arguments {', '.join(kwargs)}")
        return _core.wrap(numpy.asarray(np_method(*args), dtype=dtype))
    sig = _manifest.signature(qualname)
    if sig is None:
        raise _manifest.no_stand_in(qualname)
    arguments = sig.arguments((None,) + args if method else args, kwargs)
    arguments.pop("self", None)
    memo = {}
    arguments = {k: _core.unwrap(v, memo, qualname) for k, v in arguments.items()}
    dtype = None
    if not _takes_dtype(type(getattr(np_method, "__self__", None)), name):
        dtype = arguments.pop("dtype", None)
    elif arguments.get("dtype") is int:
        arguments["dtype"] = numpy.int64
    result = np_method(**arguments)
    if dtype is not None:
        result = numpy.asarray(result, dtype=dtype)
    return _core.wrap_result(result, memo)


@functools.cache
def _takes_dtype(np_class, name):
    """Whether NumPy's ``np_class.name`` has a ``dtype`` parameter (else the double casts)."""
    try:
        return "dtype" in inspect.signature(getattr(np_class, name)).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def _forwarder(qualname, name):
    def method(self, *args, **kwargs):
        target = getattr(self._rng, name, None)
        if target is None:
            raise _manifest.no_stand_in(qualname)
        return _call(qualname, target, name, args, kwargs, method=True)
    method.__name__ = name
    return method


def _members(cls, qualname):
    for name, entry in _manifest.MANIFEST["classes"][qualname].items():
        if entry["kind"] == "method" and name not in vars(cls):
            setattr(cls, name, _forwarder(f"{qualname}.{name}", name))


class RandomState:
    """``cupy.random.RandomState`` over ``numpy.random.RandomState``."""

    def __init__(self, seed=None, method=None):
        self._rng = numpy.random.RandomState(seed)

    def seed(self, seed=None):
        """Reseed."""
        self._rng.seed(seed)

    def permutation(self, a):
        """A permuted ``arange(a)`` or a permuted copy of the device array ``a``."""
        return _core.wrap(self._rng.permutation(a._a if type(a) is _core.ndarray else a))

    def shuffle(self, a):
        """Shuffle the device array ``a`` in place along its first axis."""
        _core.check_device_array(a, "a")
        self._rng.shuffle(a._a)


class Generator:
    """``cupy.random.Generator`` (from ``default_rng``) over ``numpy.random.Generator``."""

    def __init__(self, bit_generator=None):
        self._rng = numpy.random.default_rng(bit_generator)


_members(RandomState, "cupy.random.RandomState")
_members(Generator, "cupy.random.Generator")
_state = {"rs": RandomState()}


def default_rng(seed=None):
    """A new :class:`Generator`."""
    return Generator(seed)


def get_random_state():
    """The global :class:`RandomState`."""
    return _state["rs"]


def set_random_state(rs):
    """Replace the global :class:`RandomState`."""
    _state["rs"] = rs


def seed(seed=None):
    """Reseed the global :class:`RandomState`."""
    _state["rs"].seed(seed)


def reset_states():
    """Forget the global :class:`RandomState`."""
    _state["rs"] = RandomState()


def module_function(name):
    """``cupy.random.<name>``: the global RandomState's method (or NumPy's legacy function)."""
    qualname = f"cupy.random.{name}"

    def function(*args, **kwargs):
        rs = _state["rs"]
        if name in ("permutation", "shuffle", "seed"):
            return getattr(rs, name)(*args, **kwargs)
        target = getattr(rs._rng, name, None)
        if target is None:
            raise _manifest.no_stand_in(qualname)
        return _call(qualname, target, name, args, kwargs)
    function.__name__ = name
    return function


HANDWRITTEN = {"RandomState": RandomState, "Generator": Generator, "default_rng": default_rng,
               "get_random_state": get_random_state, "set_random_state": set_random_state,
               "seed": seed, "reset_states": reset_states}
