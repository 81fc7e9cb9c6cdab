"""The backend boundary: only gpudl/backend/ (and host-side data code) may import NumPy or CuPy."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gpudl"
# host-side readers and writers: they handle host files, never device arrays
HOST_SIDE = {"data", "serialization.py"}
ARRAY_LIBRARIES = {"numpy", "cupy", "cupyx"}


def array_imports(path: Path):
    """(line, module) for every import of numpy/cupy/cupyx in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] in ARRAY_LIBRARIES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in ARRAY_LIBRARIES:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and str(arg.value).split(".")[0] in ARRAY_LIBRARIES:
                found.append((node.lineno, arg.value))
    return found


def violations(package: Path):
    result = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative.parts[0] == "backend":
            continue
        for line, module in array_imports(path):
            host_side = relative.parts[0] in HOST_SIDE
            if host_side and module.split(".")[0] == "numpy":
                continue
            result.append(f"gpudl/{relative}:{line} imports {module}")
    return result


def test_only_the_backend_imports_numpy_or_cupy():
    assert violations(PACKAGE) == []


def test_boundary_check_catches_a_violation(tmp_path):
    (tmp_path / "backend").mkdir()
    (tmp_path / "backend" / "ok.py").write_text("import numpy\nimport cupy\n")
    (tmp_path / "layer.py").write_text("import numpy as np\nfrom cupy import ndarray\nx = __import__('numpy')\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "reader.py").write_text("import numpy\nimport cupy\n")
    assert violations(tmp_path) == [
        "gpudl/data/reader.py:2 imports cupy",
        "gpudl/layer.py:1 imports numpy",
        "gpudl/layer.py:2 imports cupy",
        "gpudl/layer.py:3 imports numpy",
    ]
