"""pytest plugin: with ``GPUDL_CUPY_DOUBLE=1``, run the test suite with the CuPy test double as ``cupy``.

Load it with ``-p`` so it is imported before ``tests/conftest.py`` (and so before gpudl imports
CuPy)::

    GPUDL_BACKEND=cupy GPUDL_CUPY_DOUBLE=1 python -m pytest -p tests.cupy_double.pytest_plugin tests

A test module that imports real-CuPy internals the double has no stand-in for (``cupy._core``,
``cupy.cuda.nvrtc``, ...) is skipped at collection, with the reason naming the module.
"""
import os

import pytest

ENABLED = os.environ.get("GPUDL_CUPY_DOUBLE", "") == "1"

if ENABLED:
    from tests import cupy_double

    cupy_double.install()


def _skip_module(message):
    return pytest.skip.Exception(f"needs the real CuPy: {message}", allow_module_level=True)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """Importing a module without a stand-in while collecting a test file skips that file."""
    if not (ENABLED and isinstance(collector, pytest.Module)):
        return (yield)
    with cupy_double.import_failures_raise(_skip_module):
        return (yield)


def pytest_report_header(config):
    """Say in the header that CuPy is the double."""
    if ENABLED:
        return (f"cupy: CPU test double (tests/cupy_double, CuPy {cupy_double.CUPY_VERSION} "
                f"manifest); GPUDL_BACKEND={os.environ.get('GPUDL_BACKEND', 'auto')}")
    return None
