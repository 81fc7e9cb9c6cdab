"""Static check that code only uses CuPy names, keywords and methods that the pinned CuPy has.

Collects from the AST:

- attribute chains on CuPy: ``cupy.X.Y`` / ``cupyx.X`` (following ``import cupy as cp`` and
  ``from cupy import X`` aliases) and the backend-neutral ``xp.X.Y`` (a name ``xp`` or any
  ``<expr>.xp``: gpudl's array module, which is CuPy on the GPU; ``NUMPY.xp`` is the host's);
- keyword arguments of calls to them, checked against the callable's signature (the installed
  CuPy's, else the pinned CuPy's recorded in ``tests/cupy_double/manifest.json``: CuPy's Cython
  functions and ufuncs have no introspectable signature);
- ``ufunc.at`` on CuPy ufuncs that raise NotImplementedError on the GPU (no scatter kernel);
  names in an optional CuPy module whose library is missing here (``cupy.cuda.nccl`` without
  libnccl) cannot be resolved and are skipped;
- method calls on ``cupy.random`` Generators (``default_rng(...)``) that CuPy's Generator lacks;
- array-method calls (``a.astype(dtype, copy=False)``) on expressions that are device arrays
  in gpudl's code: ``<tensor>.data``, results of CuPy calls and of array methods, names bound to
  those, the array parameters of ``Function.forward``/``backward``, and the parameters of
  functions in modules that import CuPy. The method must exist on ``cupy.ndarray`` and take the
  keywords given (signatures from the manifest).

What it cannot see: methods on arrays it cannot tell are arrays (attributes such as
``self.indices``, containers of arrays); the double checks those at run time.
"""
import ast
import importlib
import inspect
import sys
from pathlib import Path

_ROOTS = ("cupy", "cupyx")
# CuPy calls whose result is not a device array.
_NOT_ARRAY_RESULTS = frozenset({
    "result_type", "finfo", "iinfo", "can_cast", "min_scalar_type", "promote_types", "isscalar",
    "ndim", "shape", "size", "get_array_module", "get_default_memory_pool",
    "get_default_pinned_memory_pool", "asnumpy", "dtype"})
# ndarray methods whose result is a host value, not a device array.
_HOST_RESULT_METHODS = frozenset({"get", "item", "tolist", "tobytes"})


def _manifest():
    """The double's manifest module (loaded without installing the double)."""
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.cupy_double import _manifest
    return _manifest


def _resolve(dotted):
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], 1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            try:
                obj = importlib.import_module(".".join(parts[:i + 1]))
            except ImportError:
                raise AttributeError(dotted) from None
    return obj


def _optional_module_missing(dotted):
    """True if ``dotted`` lies in a CuPy module whose optional library is not installed here
    (``cupy.cuda.nccl`` without libnccl has only ``available = False``): it cannot be checked."""
    parts = dotted.split(".")
    for cut in range(2, len(parts)):
        try:
            module = _resolve(".".join(parts[:cut]))
        except (AttributeError, ImportError):
            return False
        if getattr(module, "available", True) is False:
            return True
    return False


def _signature(qualname, obj):
    """``inspect.Signature`` of a CuPy callable: its own, else the manifest's; None if unknown."""
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        recorded = _manifest().signature(qualname)
        return None if recorded is None else recorded.signature


def _chain(node):
    """``(root node, [attribute names])`` of an attribute chain ``root.a.b``."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    return node, list(reversed(names))


def _is_numpy_module(node):
    return isinstance(node, ast.Name) and node.id == "NUMPY" or \
        isinstance(node, ast.Attribute) and node.attr == "NUMPY"


class _Scanner:
    def __init__(self, tree):
        self.aliases = {}   # local name -> dotted cupy path
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in _ROOTS:
                        self.aliases[a.asname or a.name.split(".")[0]] = \
                            a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.split(".")[0] in _ROOTS:
                for a in node.names:
                    self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        self.imports_cupy = bool(self.aliases)
        self.problems = set()
        self.generators = set()  # local names bound to cupy.random.default_rng(...)

    # -------------------------------------------------------------- CuPy names
    def full_name(self, node):
        """The dotted CuPy name ``node`` (an attribute chain) refers to, or None."""
        root, names = _chain(node)
        if isinstance(root, ast.Name) and root.id in self.aliases:
            return ".".join([self.aliases[root.id]] + names)
        if isinstance(root, ast.Name) and root.id == "xp":
            return ".".join(["cupy"] + names)
        # <expr>.xp.name...: find the innermost ".xp" by walking from the root outwards
        node_chain = []
        current = node
        while isinstance(current, ast.Attribute):
            node_chain.append(current)
            current = current.value
        for depth, attribute in enumerate(reversed(node_chain)):
            if attribute.attr == "xp" and not _is_numpy_module(attribute.value):
                rest = [a.attr for a in reversed(node_chain)][depth + 1:]
                return ".".join(["cupy"] + rest)
        return None

    def check_name(self, name):
        try:
            return _resolve(name)
        except (AttributeError, ImportError):
            if not _optional_module_missing(name):
                self.problems.add(f"{name}: does not exist in cupy")
            return None

    def check_keywords(self, qualname, sig, call):
        if sig is None or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return
        for kw in call.keywords:
            if kw.arg and kw.arg not in sig.parameters:
                self.problems.add(f"{qualname}: no keyword {kw.arg!r}")

    # -------------------------------------------------------------- device arrays
    def is_array(self, node, arrays):
        """True if ``node`` is (by gpudl's conventions) a device array expression."""
        if isinstance(node, ast.Name):
            return node.id in arrays
        if isinstance(node, ast.Attribute):
            if node.attr == "data":
                return True
            return node.attr in ("T", "real", "imag") and self.is_array(node.value, arrays)
        if isinstance(node, ast.Subscript):
            return self.is_array(node.value, arrays)
        if isinstance(node, (ast.BinOp,)):
            return self.is_array(node.left, arrays) or self.is_array(node.right, arrays)
        if isinstance(node, ast.UnaryOp):
            return self.is_array(node.operand, arrays)
        if isinstance(node, ast.Call):
            name = self.full_name(node.func)
            if name is not None:
                last = name.rsplit(".", 1)[1]
                return name.count(".") == 1 and last not in _NOT_ARRAY_RESULTS and \
                    not (last[:1].isupper())
            if isinstance(node.func, ast.Attribute):
                return node.func.attr not in _HOST_RESULT_METHODS and \
                    self.is_array(node.func.value, arrays)
        return False

    def function_arrays(self, function, in_function_class):
        """Names in ``function`` that hold device arrays (parameters by convention, then names
        assigned from array expressions, to a fixed point)."""
        arrays = set()
        args = function.args
        params = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
        if args.vararg:
            params.append(args.vararg.arg)
        params = [p for p in params if p not in ("self", "cls")]
        if (in_function_class and function.name in ("forward", "backward")) or \
                (self.imports_cupy and not in_function_class):
            arrays.update(params)
        assigns = [n for n in ast.walk(function) if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign))]
        changed = True
        while changed:
            changed = False
            for node in assigns:
                value = node.value
                if value is None or not self.is_array(value, arrays):
                    continue
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id not in arrays:
                        arrays.add(target.id)
                        changed = True
        return arrays

    def check_array_methods(self, function, arrays):
        manifest = _manifest()
        methods = manifest.MANIFEST["classes"]["cupy.ndarray"]
        for node in ast.walk(function):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and self.is_array(node.func.value, arrays)):
                continue
            if self.full_name(node.func) is not None:
                continue
            method = node.func.attr
            if method not in methods:
                self.problems.add(f"cupy.ndarray.{method}: does not exist in cupy")
                continue
            recorded = manifest.signature(f"cupy.ndarray.{method}")
            self.check_keywords(f"cupy.ndarray.{method}", recorded and recorded.signature, node)

    # -------------------------------------------------------------- the walk
    def scan(self, tree):
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                fname = self.full_name(node.value.func)
                if fname and fname.endswith("random.default_rng"):
                    self.generators.update(t.id for t in node.targets if isinstance(t, ast.Name))
        seen = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Attribute, ast.Name)) and id(node) not in seen:
                name = self.full_name(node)
                if name is None or name in _ROOTS:
                    continue
                for sub in ast.walk(node):  # only the outermost attribute chain
                    seen.add(id(sub))
                if self.check_name(name) is not None and name.endswith(".at"):
                    ufunc = _resolve(name.rsplit(".", 1)[0])
                    if getattr(ufunc, "_scatter_op", "n/a") is None:
                        self.problems.add(f"{name}: exists but raises NotImplementedError "
                                          "(no scatter kernel)")
            if isinstance(node, ast.Call):
                name = self.full_name(node.func)
                if name:
                    try:
                        obj = _resolve(name)
                    except (AttributeError, ImportError):
                        continue
                    self.check_keywords(name, _signature(name, obj), node)
                elif isinstance(node.func, ast.Attribute) and \
                        isinstance(node.func.value, ast.Name) and node.func.value.id in self.generators:
                    import cupy
                    if not hasattr(cupy.random.Generator, node.func.attr):
                        self.problems.add(f"cupy.random.Generator.{node.func.attr}: does not exist")
        self.scan_functions(tree, in_function_class=False)
        return sorted(self.problems)

    def scan_functions(self, node, in_function_class):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in child.bases}
                self.scan_functions(child, any(b.endswith("Function") for b in bases))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.check_array_methods(child, self.function_arrays(child, in_function_class))
                self.scan_functions(child, False)


def scan_source(source, filename="<module>"):
    """Return a sorted list of problems (strings) found in ``source``."""
    tree = ast.parse(source, filename)
    return _Scanner(tree).scan(tree)


def scan_file(path):
    """:func:`scan_source` of a file."""
    with open(path) as f:
        return scan_source(f.read(), str(path))
