"""Static check that code only uses CuPy names, keywords and methods that the installed CuPy has.

Collects from the AST: ``cupy.X.Y`` / ``cupyx.X`` attribute chains (following ``import cupy as
cp`` and ``from cupy import X`` aliases), keyword arguments of calls to resolved CuPy callables,
``ufunc.at`` on CuPy ufuncs that raise NotImplementedError on the GPU (no scatter kernel), and
method calls on ``cupy.random`` Generators (``default_rng(...)``) that CuPy's Generator lacks.
It cannot see methods called on arbitrary objects (``arr.get()``).
"""
import ast
import importlib
import inspect


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


def _dotted(node):
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        names.append(node.id)
        return list(reversed(names))
    return None


def scan_source(source, filename="<module>"):
    """Return a sorted list of problems (strings) found in ``source``."""
    tree = ast.parse(source, filename)
    aliases = {}      # local name -> dotted cupy path
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in ("cupy", "cupyx"):
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else \
                        a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] in ("cupy", "cupyx"):
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    problems = set()
    generators = set()  # local names bound to cupy.random.default_rng(...)

    def full_name(node):
        parts = _dotted(node)
        if not parts or parts[0] not in aliases:
            return None
        return ".".join([aliases[parts[0]]] + parts[1:])

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            fname = full_name(node.value.func)
            if fname and fname.endswith("random.default_rng"):
                generators.update(t.id for t in node.targets if isinstance(t, ast.Name))
    seen = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Attribute, ast.Name)) and id(node) not in seen:
            name = full_name(node)
            # only the outermost attribute chain
            if name is None:
                continue
            for sub in ast.walk(node):
                seen.add(id(sub))
            try:
                obj = _resolve(name)
            except (AttributeError, ImportError):
                problems.add(f"{name}: does not exist in cupy")
                continue
            if name.endswith(".at"):
                ufunc = _resolve(name.rsplit(".", 1)[0])
                if getattr(ufunc, "_scatter_op", "n/a") is None:
                    problems.add(f"{name}: exists but raises NotImplementedError "
                                 "(no scatter kernel)")
        if isinstance(node, ast.Call):
            name = full_name(node.func)
            if name:
                try:
                    obj = _resolve(name)
                    sig = inspect.signature(obj)
                except (AttributeError, ImportError, TypeError, ValueError):
                    continue
                params = sig.parameters.values()
                if any(p.kind is p.VAR_KEYWORD for p in params):
                    continue
                for kw in node.keywords:
                    if kw.arg and kw.arg not in sig.parameters:
                        problems.add(f"{name}: no keyword {kw.arg!r}")
            elif isinstance(node.func, ast.Attribute) and \
                    isinstance(node.func.value, ast.Name) and node.func.value.id in generators:
                import cupy
                if not hasattr(cupy.random.Generator, node.func.attr):
                    problems.add(f"cupy.random.Generator.{node.func.attr}: does not exist")
    return sorted(problems)


def scan_file(path):
    with open(path) as f:
        return scan_source(f.read(), str(path))
