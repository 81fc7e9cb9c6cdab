"""Installs the CuPy test double in Python subprocesses of a double test run.

``tests/cupy_double/pytest_plugin.py`` puts this folder (and the repository root) on
``PYTHONPATH``, so a test that starts ``python -m gpudl.cli ...`` with ``GPUDL_CUPY_DOUBLE=1``
in its environment gets the double there too.
"""
import os

if os.environ.get("GPUDL_CUPY_DOUBLE") == "1":
    from tests import cupy_double

    cupy_double.install()
    cupy_double.connect_gpudl()
