"""Locate and read the CUDA headers in ``kernels/``.

The headers ship inside the wheel as the package ``gpudl._kernels``; in a source
checkout (editable install or plain ``PYTHONPATH``) they are read from the
top-level ``kernels/`` folder next to the ``gpudl`` package.
"""
import functools
import importlib.resources
from pathlib import Path

_CHECKOUT_KERNELS = Path(__file__).resolve().parents[2] / "kernels"


@functools.cache
def kernel_dir() -> Path:
    """Return the folder that holds the ``*.cuh`` kernel headers."""
    if _CHECKOUT_KERNELS.is_dir():
        return _CHECKOUT_KERNELS
    try:
        return Path(str(importlib.resources.files("gpudl._kernels")))
    except ModuleNotFoundError:
        raise FileNotFoundError(
            f"gpudl kernels not found: neither {_CHECKOUT_KERNELS} nor the installed package "
            "gpudl._kernels exists; reinstall gpudl") from None


@functools.cache
def read_kernel(name: str) -> str:
    """Return the text of ``kernels/<name>`` (e.g. ``"activations.cuh"``)."""
    return (kernel_dir() / name).read_text()
