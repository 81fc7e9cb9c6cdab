"""Write ``manifest.json``: the public surface of the installed (pinned) CuPy, for the test double.

Run with the real CuPy importable (no GPU needed)::

    PYTHONPATH=. .venv/bin/python -m tests.cupy_double.make_manifest

The manifest records, per module, every public name with its kind (submodule, ufunc, function,
class, NumPy re-export, plain value), the call signature (from ``inspect`` or, for Cython
functions, from the embedded docstring signature), ufunc arity and whether ``ufunc.at`` works,
and the members of the classes the double imitates. ``tests/test_cupy_double.py`` regenerates it
and fails when it differs from the committed file (a CuPy upgrade must regenerate it).
"""
import ast
import importlib
import importlib.util
import inspect
import json
import re
import sys
import types
from pathlib import Path

MANIFEST = Path(__file__).with_name("manifest.json")

# Modules the double builds (others that CuPy has are "no stand-in").
MODULES = ("cupy", "cupy.linalg", "cupy.fft", "cupy.random", "cupy.lib", "cupy.lib.stride_tricks",
           "cupy.exceptions", "cupy.cuda", "cupy.cuda.runtime", "cupy.cuda.memory",
           "cupy.cuda.device", "cupy.cuda.stream", "cupy.cuda.nvtx", "cupyx", "cupyx.scipy",
           "cupyx.scipy.special", "cupyx.profiler")

# Classes whose members (methods with signatures, properties) the double checks.
CLASSES = ("cupy.ndarray", "cupy.random.Generator", "cupy.random.RandomState",
           "cupy.cuda.Device", "cupy.cuda.Stream", "cupy.cuda.Event", "cupy.cuda.MemoryPool",
           "cupy.cuda.PinnedMemoryPool", "cupy.cuda.Graph", "cupy.ElementwiseKernel",
           "cupy.ReductionKernel", "cupy.RawKernel")

# Special methods of ndarray worth recording (the rest are Python's defaults).
_NDARRAY_DUNDERS = {"__array__", "__array_function__", "__array_ufunc__", "__dlpack__",
                    "__dlpack_device__", "__cuda_array_interface__", "__index__", "__float__",
                    "__int__", "__bool__", "__complex__", "__iter__", "__len__", "__reduce__",
                    "__array_interface__", "__buffer__", "__hash__", "__format__"}

# Names the real modules create on first access (module ``__getattr__``), missed by ``dir()``.
LAZY = {"cupy.random": ("Generator",),
        "cupy.cuda": ("cublas", "cufft", "curand", "cusolver", "cusparse", "jitify"),
        "cupyx": ("cusparse", "lapack")}

_NUMPY_TWIN = {"cupy": "numpy", "cupy.linalg": "numpy.linalg", "cupy.fft": "numpy.fft",
               "cupy.random": "numpy.random", "cupy.lib": "numpy.lib",
               "cupy.lib.stride_tricks": "numpy.lib.stride_tricks",
               "cupy.exceptions": "numpy.exceptions"}


def _split_params(text):
    """Split a parameter list at top-level commas."""
    parts, depth, quote, current = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += ch
    if current.strip():
        parts.append(current.strip())
    return parts


def _doc_signature(obj):
    """Parameters from the signature Cython embeds in the first docstring line, or None."""
    first = (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
    match = re.match(r"^[\w.]+\((.*)\)(\s*->.*)?$", first)
    if not match:
        return None
    cleaned = []
    for part in _split_params(match.group(1)):
        if part in ("*", "/") or part.startswith("*"):
            cleaned.append(part)
            continue
        left, eq, default = part.partition("=")
        cleaned.append(left.split()[-1] + (eq + default.strip() if eq else ""))
    args = ast.parse(f"def f({', '.join(cleaned)}): pass").body[0].args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    params = [[a.arg, "P" if a in args.posonlyargs else "PK",
               None if d is None else ast.unparse(d)] for a, d in zip(positional, defaults)]
    if args.vararg:
        params.append([args.vararg.arg, "VP", None])
    params += [[a.arg, "K", None if d is None else ast.unparse(d)]
               for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    if args.kwarg:
        params.append([args.kwarg.arg, "VK", None])
    return params


_KINDS = {inspect.Parameter.POSITIONAL_ONLY: "P", inspect.Parameter.POSITIONAL_OR_KEYWORD: "PK",
          inspect.Parameter.VAR_POSITIONAL: "VP", inspect.Parameter.KEYWORD_ONLY: "K",
          inspect.Parameter.VAR_KEYWORD: "VK"}


def signature_of(obj):
    """``[[name, kind, default repr or None], ...]`` for a callable (kinds P, PK, VP, K, VK),
    or None when no signature can be found."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return _doc_signature(obj)
    return [[p.name, _KINDS[p.kind], None if p.default is p.empty else repr(p.default)]
            for p in sig.parameters.values()]


def _is_numpy_object(obj, module_name, name):
    import numpy
    twin = _NUMPY_TWIN.get(module_name)
    if twin is not None:
        try:
            if getattr(importlib.import_module(twin), name) is obj:
                return f"{twin}.{name}"
        except (AttributeError, ImportError):
            pass
    if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType, numpy.ufunc)) and \
            (getattr(obj, "__module__", "") or "").split(".")[0] == "numpy":
        return f"{obj.__module__}.{getattr(obj, '__qualname__', name)}"
    return None


_ROOTS = ("cupy", "cupyx", "cupy_backends")


def module_entry(real_name, module_name, name):
    """The entry of a submodule, as CuPy exposes it: one of CuPy's own under the name it is reached by
    (where it is loaded from depends on the machine: ``cupy.cuda.cublas`` loads as
    ``cupy_backends.cuda.libs.cublas`` only where the CUDA library is installed, e.g. by PyTorch's
    NVIDIA wheels), any other (``threading``, ``numpy``) under its own name."""
    own = real_name.split(".")[0] in _ROOTS
    return {"kind": "module", "module": f"{module_name}.{name}" if own else real_name}


def describe(obj, module_name, name):
    """The manifest entry for ``module_name.name``."""
    if isinstance(obj, types.ModuleType):
        return module_entry(obj.__name__, module_name, name)
    from cupy._core._kernel import ufunc
    numpy_path = _is_numpy_object(obj, module_name, name)
    if numpy_path is not None:
        return {"kind": "numpy", "path": numpy_path}
    if isinstance(obj, ufunc):
        return {"kind": "ufunc", "name": obj.name, "nin": obj.nin, "nout": obj.nout,
                "at": obj._scatter_op is not None}
    if type(obj).__name__ == "_GUFunc":
        return {"kind": "gufunc", "signature": getattr(obj, "_signature", None)}
    if isinstance(obj, type):
        return {"kind": "class", "bases": [b.__name__ for b in obj.__mro__[1:]]}
    if callable(obj):
        return {"kind": "function", "signature": signature_of(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"kind": "value", "value": obj}
    return {"kind": "object", "type": type(obj).__name__}


def _members(cls, qualname):
    members = {}
    for name in sorted(dir(cls)):
        if name.startswith("_") and not (qualname == "cupy.ndarray" and name in _NDARRAY_DUNDERS):
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, (property, types.GetSetDescriptorType, types.MemberDescriptorType)):
            members[name] = {"kind": "property"}
        elif attr is None:
            members[name] = {"kind": "none"}
        elif callable(getattr(cls, name)) or isinstance(attr, (staticmethod, classmethod)):
            members[name] = {"kind": "method", "signature": signature_of(getattr(cls, name))}
        else:
            members[name] = {"kind": "attribute"}
    return members


def _package_modules():
    """Every module of the installed cupy, cupyx and cupy_backends packages (from the files)."""
    for root in ("cupy", "cupyx", "cupy_backends"):
        base = Path(importlib.util.find_spec(root).origin).parent
        for path in base.rglob("*"):
            if path.suffix not in (".py", ".so") or "include" in path.relative_to(base).parts:
                continue
            parts = (root,) + path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join(parts).split(".cpython-")[0]
            if all(part.isidentifier() for part in name.split(".")):
                yield name


def build_manifest():
    """The manifest as a dict (imports the real CuPy)."""
    import cupy
    modules = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        entries = {}
        for name in sorted(dir(module)):
            if name.startswith("_") or name == "annotations":
                continue
            entries[name] = describe(getattr(module, name), module_name, name)
        for name in LAZY.get(module_name, ()):
            try:
                entries[name] = describe(getattr(module, name), module_name, name)
            except ImportError:  # a CUDA library that is not installed: CuPy exposes the name all the same
                entries[name] = module_entry(f"{module_name}.{name}", module_name, name)
        modules[module_name] = dict(sorted(entries.items()))
    classes = {}
    for qualname in CLASSES:
        module_name, _, name = qualname.rpartition(".")
        classes[qualname] = _members(getattr(importlib.import_module(module_name), name), qualname)
    real_modules = sorted(set(_package_modules()) | {
        m for m in sys.modules if m.split(".")[0] in ("cupy", "cupyx", "cupy_backends")})
    return {"cupy_version": cupy.__version__, "modules": modules, "classes": classes,
            "real_modules": real_modules}


def differences(fresh, committed, limit=20):
    """Where two manifests differ, as ``"path: committed -> fresh"`` lines (at most ``limit``)."""
    found = []

    def walk(path, a, b):
        if len(found) >= limit or a == b:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(f"{path}.{key}" if path else key, a.get(key, "<absent>"), b.get(key, "<absent>"))
        elif isinstance(a, list) and isinstance(b, list) and path == "real_modules":
            for name in sorted(set(a) ^ set(b))[:limit - len(found)]:
                found.append(f"real_modules: {name} " + ("only in manifest.json" if name in a else "only installed"))
        elif json.dumps(a) != json.dumps(b):  # (NaN values compare unequal to themselves)
            found.append(f"{path}: {json.dumps(a)} -> {json.dumps(b)}")

    walk("", committed, fresh)
    return found


def render(manifest):
    """The JSON text written to ``manifest.json`` (stable: sorted keys, one entry per line)."""
    return json.dumps(manifest, indent=1, sort_keys=True) + "\n"


def main():
    """Regenerate ``manifest.json`` next to this file."""
    MANIFEST.write_text(render(build_manifest()))
    print(f"wrote {MANIFEST}")


if __name__ == "__main__":
    main()
