"""The committed manifest of the real CuPy, and CuPy-style signature checks built from it."""
import functools
import importlib
import inspect
import json
from pathlib import Path

MANIFEST = json.loads(Path(__file__).with_name("manifest.json").read_text())
CUPY_VERSION = MANIFEST["cupy_version"]

_KINDS = {"P": inspect.Parameter.POSITIONAL_ONLY, "PK": inspect.Parameter.POSITIONAL_OR_KEYWORD,
          "VP": inspect.Parameter.VAR_POSITIONAL, "K": inspect.Parameter.KEYWORD_ONLY,
          "VK": inspect.Parameter.VAR_KEYWORD}


class NoStandInError(NotImplementedError):
    """A name that exists in the real CuPy but that the double cannot run on the CPU."""


def no_stand_in(qualname, why=""):
    """The error for ``qualname``: it exists in CuPy but has no CPU stand-in."""
    return NoStandInError(f"cupy_double: {qualname} exists in CuPy {CUPY_VERSION} but has no CPU "
                          f"stand-in{': ' + why if why else ''} (run this on a real GPU)")


class _Default(str):
    """A default value as CuPy's source spells it (shown verbatim in signatures)."""

    def __repr__(self):
        return str(self)


class Signature:
    """A CuPy signature from the manifest: binds calls and explains a mismatch in CuPy's terms."""

    __slots__ = ("qualname", "signature", "text", "defaults")

    def __init__(self, qualname, params):
        self.qualname = qualname
        self.defaults = {name: default for name, _, default in params}
        parameters = []
        for name, kind, default in params:
            has_default = default is not None and kind in ("P", "PK", "K")
            parameters.append(inspect.Parameter(
                name, _KINDS[kind], default=_Default(default) if has_default else inspect.Parameter.empty))
        self.signature = inspect.Signature(parameters)
        self.text = str(self.signature)

    def _bound(self, args, kwargs):
        try:
            return self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.qualname}(): {exc} [signature in CuPy {CUPY_VERSION}: "
                            f"{self.text}]") from None

    def bind(self, args, kwargs):
        """``(args, kwargs)`` in canonical form; TypeError naming CuPy's signature if they don't fit."""
        bound = self._bound(args, kwargs)
        return bound.args, bound.kwargs

    def arguments(self, args, kwargs):
        """The arguments passed, by parameter name (TypeError as :meth:`bind`)."""
        return dict(self._bound(args, kwargs).arguments)


@functools.cache
def signature(qualname):
    """The :class:`Signature` of ``cupy...name`` or ``cupy.Class.method`` (None if unknown)."""
    module, _, name = qualname.rpartition(".")
    entry = MANIFEST["modules"].get(module, {}).get(name)
    if entry is None and module in MANIFEST["classes"]:
        entry = MANIFEST["classes"][module].get(name)
    params = entry.get("signature") if entry else None
    return Signature(qualname, params) if isinstance(params, list) else None


def resolve_numpy(path):
    """The NumPy object at a dotted ``path`` such as ``numpy.lib.stride_tricks.as_strided``."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            return functools.reduce(getattr, parts[cut:], obj)
        except AttributeError:
            return None
    return None
