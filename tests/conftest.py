"""Shared fixtures: every backend-dependent test runs once per available device.

``device`` is ``"cpu"`` and, when CuPy sees a usable GPU (or the CuPy test double is
installed, see tests/cupy_double), ``"cuda"``; the CUDA case skips with the reason otherwise.
"""
import os
from pathlib import Path

import numpy as np
import pytest

import gpudl
from gpudl import backend

REPO = Path(__file__).resolve().parents[1]


def _cuda_param():
    usable = backend.cupy_gpu_usable()
    marks = () if usable else (pytest.mark.skip(reason="no CUDA GPU available (cupy.cuda.is_available() is False "
                                                       "or CuPy is not installed)"),)
    return pytest.param("cuda", marks=marks, id="cuda")


@pytest.fixture
def torch():
    """PyTorch, for a side-by-side check; the test skips where it is not installed."""
    return pytest.importorskip("torch", reason="PyTorch is not installed: no side-by-side check "
                                               "(run with .venv-torch/bin/python)")


@pytest.fixture(params=["cpu", _cuda_param()])
def device(request):
    """A device name to create tensors on: ``"cpu"`` or ``"cuda"``."""
    return request.param


def _uses_torch(item):
    """True for a PyTorch side-by-side test: it takes a ``torch`` fixture or names torch in its own code
    (``torch = pytest.importorskip("torch")``, or a module-level ``torch``)."""
    code = getattr(getattr(item, "function", None), "__code__", None)
    named = code is not None and any("torch" in names for names in (code.co_names, code.co_varnames, code.co_consts))
    return named or "torch" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config, items):
    """With ``GPUDL_TORCH_PARITY=1`` (CI's pass in .venv-torch) only the tests that use PyTorch run."""
    if os.environ.get("GPUDL_TORCH_PARITY") != "1":
        return
    selected = [item for item in items if _uses_torch(item)]
    config.hook.pytest_deselected(items=[item for item in items if not _uses_torch(item)])
    items[:] = selected


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state."""
    gpudl.manual_seed(0)
    yield


def subprocess_env(**extra):
    """Environment for a subprocess running gpudl from this checkout: the repository goes in front of
    PYTHONPATH (kept, so that a test double installed through it reaches the subprocess too)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def to_numpy(value):
    """Host NumPy copy of a tensor or array (test helper)."""
    if isinstance(value, gpudl.Tensor):
        return value.numpy()
    return backend.to_host(value) if backend.is_array(value) else np.asarray(value)
