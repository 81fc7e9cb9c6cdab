"""``gpudl info``: the backend GPUDL_BACKEND selects, its device, CPU kernels, GEMM provider and versions."""
import platform

from .. import __version__
from .. import backend as _backend
from ..backend import blas, cpu_kernels, host_memory


def add_parser(commands):
    """Register the sub-command."""
    parser = commands.add_parser("info", help="show the backend, device and versions")
    parser.set_defaults(run=run)


def run(args) -> int:
    """Print what gpudl would run on."""
    requested = _backend.requested_backend()
    device = _backend.default_device()
    chosen = _backend.backend_for(device)
    fallback = " (auto: no usable CUDA GPU, using the CPU)" if requested == "auto" and chosen.name == "numpy" else ""
    print(f"gpudl {__version__}")
    print(f"python {platform.python_version()} ({platform.machine()})")
    print(f"GPUDL_BACKEND={requested} -> backend {chosen.name}{fallback}")
    print(f"device: {device} ({chosen.describe_device(device)})")
    print(f"CPU kernels: {describe_cpu_kernels()}")
    print(f"BLAS (CPU GEMM): {blas.describe()}")
    print(f"host allocator: {host_memory.describe()}")
    print(f"numpy {_backend.NUMPY.version()}")
    print(f"cupy {_backend.installed_cupy_version() or 'not installed'}")
    return 0


def describe_cpu_kernels() -> str:
    """One line: which path the NumPy backend's fused ops take (``GPUDL_CPU_KERNELS``) and why."""
    status = cpu_kernels.status()
    threads = f", {status.threads} OpenMP threads" if status.path == "native" else ""
    return f"{status.path} ({status.reason}{threads})"
