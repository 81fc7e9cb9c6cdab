"""Choosing the array library from ``GPUDL_BACKEND`` (``numpy``, ``cupy`` or ``auto``)."""
import os

VALID_BACKENDS = ("numpy", "cupy", "auto")


class BackendError(RuntimeError):
    """The requested backend or device cannot be used on this machine."""


def environment_choice(variable, default, choices, error=BackendError):
    """The value of environment variable ``variable`` (``default`` when unset or blank), stripped and
    lower-cased; raises ``error`` naming the variable, its value and ``choices`` for anything else."""
    raw = os.environ.get(variable, default)
    choice = raw.strip().lower() or default
    if choice not in choices:
        raise error(f"{variable}={raw!r} is not valid; valid values are: {', '.join(choices)}")
    return choice


def requested_backend() -> str:
    """The backend named by ``GPUDL_BACKEND`` (default ``auto``), validated."""
    return environment_choice("GPUDL_BACKEND", "auto", VALID_BACKENDS)


def cupy_gpu_usable() -> bool:
    """True when CuPy imports and sees at least one usable CUDA device; never raises."""
    try:
        import cupy
        return bool(cupy.cuda.is_available())
    except Exception:
        return False


def require_cupy(reason: str, cpu_choice: str = "GPUDL_BACKEND=numpy or auto"):
    """Import CuPy for ``reason`` or raise a BackendError saying what is missing (and that ``cpu_choice``,
    in the words the caller's user typed, runs on the CPU)."""
    try:
        import cupy  # noqa: F401
    except ImportError as exc:
        raise BackendError(
            f"{reason} needs CuPy, which is not installed ({exc}); install it with "
            "pip install 'gpudl[cuda12]' (CUDA 12) or pip install 'gpudl[cuda13]' (CUDA 13)") from None
    if not cupy_gpu_usable():
        raise BackendError(
            f"{reason} needs a CUDA GPU, but CuPy is installed and finds no usable GPU "
            "(cupy.cuda.is_available() is False: no device, or no/too old NVIDIA driver); "
            f"use {cpu_choice} to run on the CPU")


def resolve(name: str) -> str:
    """Map ``numpy``/``cupy``/``auto`` to the backend that will run: ``numpy`` or ``cupy``."""
    if name == "numpy":
        return "numpy"
    if name == "cupy":
        require_cupy("GPUDL_BACKEND=cupy")
        return "cupy"
    return "cupy" if cupy_gpu_usable() else "numpy"
