"""``gpudl.cuda``: what PyTorch scripts ask about CUDA (``gpudl.cuda.is_available()`` and friends).

Answers come from CuPy through the backend; on a machine without CuPy or without a usable GPU
``is_available()`` is False and ``device_count()`` 0, and nothing raises.
"""
from . import backend as _backend


def is_available() -> bool:
    """True when CuPy is installed and sees at least one usable CUDA GPU."""
    return _backend.cupy_gpu_usable()


def device_count() -> int:
    """The number of usable CUDA GPUs (0 without CuPy or a GPU)."""
    return _backend.get_cupy_backend().device_count() if is_available() else 0


def current_device() -> int:
    """The index of the default CUDA device (that of the default device when it is a GPU, else 0)."""
    _require("current_device")
    default = _backend.default_device()
    return default.index if default.kind == "cuda" else 0


def synchronize(device=None) -> None:
    """Wait until all work queued on the CUDA ``device`` (default: the current one) has finished."""
    _require("synchronize")
    _backend.get_cupy_backend().synchronize(None if device is None else _backend.get_device(device))


def get_device_name(device=None) -> str:
    """The name of a CUDA device (default: the current one), e.g. ``"NVIDIA H100 80GB HBM3"``."""
    _require("get_device_name")
    target = _backend.get_device(f"cuda:{current_device()}" if device is None else
                                 f"cuda:{device}" if isinstance(device, int) else device)
    return _backend.get_cupy_backend().describe_device(target)


def _require(name):
    if not is_available():
        raise _backend.BackendError(f"gpudl.cuda.{name}(): no usable CUDA GPU (gpudl.cuda.is_available() is False: "
                                    "CuPy is not installed or sees no GPU)")
