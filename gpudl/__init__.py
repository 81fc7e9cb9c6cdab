"""gpudl: a small deep-learning framework whose tensors run on NumPy (CPU) or CuPy (CUDA GPUs).

``GPUDL_BACKEND=numpy|cupy|auto`` picks where new tensors live (``auto``: a usable CUDA GPU
if there is one, else the CPU).
"""
from . import autograd
from .autograd.grad_mode import enable_grad, is_grad_enabled, no_grad
from .backend import (BackendError, Device, bool_, check_device_errors, default_device, float16, float32, float64,
                      int8, int16, int32, int64, manual_seed, set_default_device, uint8)
from . import cuda
from .factories import (arange, as_tensor, device, empty, from_numpy, full, full_like, linspace, ones, ones_like, rand,
                        randint, randn, randperm, tensor, zeros, zeros_like)
from .ops import *  # noqa: F401,F403
from .profiler import profile
from .serialization import CheckpointError, load, save
from .tensor import Size, Tensor

inference_mode = no_grad  # PyTorch's faster no_grad; here the two are the same

# PyTorch's dtype names (gpudl.float is float32 as torch.float, gpudl.int int32 as torch.int)
float, double, half, long, int, short, bool = float32, float64, float16, int64, int32, int16, bool_  # noqa: A001

__version__ = "0.1.0"
