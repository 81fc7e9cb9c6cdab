"""The two PyTorch-idiom examples run under gpudl as written, and under PyTorch with only their import block
swapped (where PyTorch is importable), on a few batches."""
import re
import subprocess
import sys

import pytest

import gpudl
from conftest import REPO, subprocess_env

EXAMPLES = {"fashion_cnn.py": ["--batches", "3", "--epochs", "1"], "sequence_lstm.py": ["--batches", "3"]}
BLOCK = re.compile(r"(# --- the imports[^\n]*\n)(.*?)(# -{20,}\n)", re.S)


def _imports_block(text):
    match = BLOCK.search(text)
    assert match, "the example must mark its import block"
    return match


def torch_imports(block):
    """gpudl's imports written as PyTorch's: ``gpudl.data`` is ``torch.utils.data``, ``gpudl`` is ``torch``."""
    return block.replace("gpudl.data", "torch.utils.data").replace("gpudl", "torch").replace(
        "import torch as torch", "import torch")


def torch_version(text):
    """The example with its import block written for PyTorch (nothing else changes)."""
    match = _imports_block(text)
    return text[:match.start(2)] + torch_imports(match.group(2)) + text[match.end(2):]


def _run(path, args, tmp_path):
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=600,
                          env=subprocess_env(), cwd=tmp_path)


def _needs_data(name):
    if name == "fashion_cnn.py":
        from gpudl.data import DataError, FashionMNIST
        try:
            FashionMNIST(train=False, limit=1)
        except DataError as exc:
            pytest.skip(f"Fashion-MNIST is not installed: {exc}")


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_under_gpudl(name, tmp_path):
    _needs_data(name)
    text = (REPO / "examples" / name).read_text()
    assert "import torch\n" not in text and "gpudl" in _imports_block(text).group(2)
    result = _run(REPO / "examples" / name, EXAMPLES[name], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done!" in result.stdout
    device = "cuda" if gpudl.cuda.is_available() else "cpu"    # through the CuPy double: the GPU path
    assert f"Using {device}" in result.stdout or f"on {device}" in result.stdout, result.stdout[-2000:]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_under_pytorch_with_only_the_imports_changed(name, tmp_path):
    pytest.importorskip("torch")
    _needs_data(name)
    script = tmp_path / name
    script.write_text(torch_version((REPO / "examples" / name).read_text()))
    result = _run(script, EXAMPLES[name], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done!" in result.stdout


@pytest.mark.parametrize("name", EXAMPLES)
def test_torch_version_changes_only_the_import_block(name):
    text = (REPO / "examples" / name).read_text()
    block = _imports_block(text).group(2)
    converted = torch_version(text)
    assert "gpudl" not in torch_imports(block) and "import torch\n" in torch_imports(block)
    assert converted.replace(torch_imports(block), block, 1) == text
