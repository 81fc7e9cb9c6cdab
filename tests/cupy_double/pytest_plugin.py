"""pytest plugin: with ``GPUDL_CUPY_DOUBLE=1``, run the test suite with the CuPy test double as ``cupy``.

Load it with ``-p`` so it is imported before ``tests/conftest.py`` (and so before gpudl imports
CuPy)::

    GPUDL_BACKEND=cupy GPUDL_CUPY_DOUBLE=1 python -m pytest -p tests.cupy_double.pytest_plugin tests

Python subprocesses started by tests (``python -m gpudl.cli ...``) inherit ``GPUDL_CUPY_DOUBLE``
and get the double too: ``_site/sitecustomize.py`` is put on ``PYTHONPATH``.

A test module that imports real-CuPy internals the double has no stand-in for (``cupy._core``,
``cupy.cuda.nvrtc``, ...) is skipped at collection, with the reason naming the module.
"""
import os
from pathlib import Path

import pytest

ENABLED = os.environ.get("GPUDL_CUPY_DOUBLE", "") == "1"

if ENABLED:
    from tests import cupy_double

    cupy_double.install()
    cupy_double.connect_gpudl()
    _HERE = Path(__file__).resolve().parent
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(_HERE / "_site"), str(_HERE.parents[1])]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


_REASON = "needs the real CuPy"


def _skip_module(message):
    return pytest.skip.Exception(f"{_REASON}: {message}", allow_module_level=True)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """Importing a module without a stand-in while collecting a test file skips that file."""
    if not (ENABLED and isinstance(collector, pytest.Module)):
        return (yield)
    with cupy_double.import_failures_raise(_skip_module):
        report = yield
    if report.skipped and isinstance(report.longrepr, tuple) and _REASON in report.longrepr[2]:
        report.longrepr = (str(collector.path), 0, report.longrepr[2])  # name the test file
    return report


def pytest_report_header(config):
    """Say in the header that CuPy is the double."""
    if ENABLED:
        return (f"cupy: CPU test double (tests/cupy_double, CuPy {cupy_double.CUPY_VERSION} "
                f"manifest); GPUDL_BACKEND={os.environ.get('GPUDL_BACKEND', 'auto')}")
    return None
