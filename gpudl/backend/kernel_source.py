"""Locate and read the CUDA headers in ``kernels/``.

A wheel ships them inside the package as ``gpudl/_kernels/``; in a source checkout (an
editable install or ``PYTHONPATH``) they are the top-level ``kernels/`` folder beside ``gpudl/``.
"""
import functools
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]
_CANDIDATES = (_PACKAGE / "_kernels", _PACKAGE.parent / "kernels")


@functools.cache
def kernel_dir() -> Path:
    """Return the folder that holds the ``*.cuh`` kernel headers."""
    for folder in _CANDIDATES:
        if (folder / "activations.cuh").is_file():
            return folder
    raise FileNotFoundError(f"gpudl's CUDA kernel headers were not found in {' or '.join(map(str, _CANDIDATES))}; "
                            "reinstall gpudl")


@functools.cache
def read_kernel(name: str) -> str:
    """Return the text of ``kernels/<name>`` (e.g. ``"activations.cuh"``)."""
    return (kernel_dir() / name).read_text()
