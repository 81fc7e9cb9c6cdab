"""Keep the host memory a training step frees inside the process, for the next step to reuse.

Every step allocates the same large NumPy arrays again (activations, gradients, GEMM outputs).
With glibc's defaults, ``free`` hands them back to the kernel: a block above the mmap threshold
(128 KiB at start, raised dynamically to the size of a freed mmap'ed block, at most 32 MiB on
64-bit) is ``munmap``'ed, and the heap's free top is trimmed with ``sbrk`` once it exceeds the trim
threshold (twice the mmap threshold). The next step page-faults every page back in and the kernel
zero-fills it: thousands of minor faults per step, a fifth of a transformer step at batch 512.

When the NumPy backend first runs its fused ops, gpudl calls ``mallopt`` (glibc) to set
``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` to their largest value, ``INT_MAX`` (``mallopt``
takes an ``int``; glibc 2.36 accepts it and a set threshold turns the dynamic adjustment off). Blocks
below 2 GiB then come from the heap and freed ones stay there for reuse, as a caching allocator
keeps freed GPU memory: the process's resident memory stays at its peak step's, instead of being
returned and faulted back each step. Blocks of 2 GiB and more are still mmap'ed each time
(``M_MMAP_MAX=0`` would keep them on the heap too; not set, as no bench model allocates blocks
that large and its effect there is unmeasured). ``M_ARENA_MAX`` is left alone: a training step
allocates on the main thread, in the main arena. A thread's own arena still maps (and faults) its
blocks of more than ~32 MiB each time (measured: 40 and 100 MiB arrays in a thread, ~530-610
faults each with or without these settings; ``M_ARENA_MAX=1`` would route them to the main
arena, at the price of one lock for every thread's allocations).

Nothing is changed when ``GPUDL_HOST_ALLOCATOR=system`` (the opt-out, for processes that must
return memory to the OS between steps), when the user tuned malloc (any ``MALLOC_*`` variable,
or ``GLIBC_TUNABLES`` naming ``glibc.malloc``), or when the C library is not glibc (musl, macOS,
Windows: nothing to tune). :func:`configure` returns what was done, for ``gpudl info`` and the bench JSON.
"""
import ctypes
import os
from typing import NamedTuple

from .selection import environment_choice

VALID_CHOICES = ("caching", "system")
# <malloc.h>: the parameter numbers of mallopt.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# The largest value mallopt's int parameter can carry.
_INT_MAX = 2 ** 31 - 1
SETTINGS = {"M_MMAP_THRESHOLD": (M_MMAP_THRESHOLD, _INT_MAX),
            "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, _INT_MAX)}


class Status(NamedTuple):
    """What gpudl did to the host allocator: ``policy`` (``caching`` or ``system``), the mallopt
    settings it made (name -> value, empty when none) and why."""
    policy: str
    settings: dict
    reason: str


_status = None


def requested() -> str:
    """``GPUDL_HOST_ALLOCATOR`` (default ``caching``), validated."""
    return environment_choice("GPUDL_HOST_ALLOCATOR", "caching", VALID_CHOICES)


def glibc_version():
    """The running C library's version if it is glibc (e.g. ``"2.36"``), else None."""
    try:
        value = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        return None
    if not value or not value.startswith("glibc "):
        return None
    return value.split()[1]


def user_malloc_settings() -> list:
    """The environment variables by which the user tuned glibc's malloc themselves."""
    names = sorted(name for name in os.environ if name.startswith("MALLOC_"))
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        names.append("GLIBC_TUNABLES")
    return names


def configure() -> Status:
    """Make glibc keep freed memory in the process (see the module docstring), once per process;
    return what was done. Raises BackendError for an invalid ``GPUDL_HOST_ALLOCATOR``."""
    global _status
    if _status is None:
        _status = _decide(requested())
    return _status


def _decide(choice) -> Status:
    if choice == "system":
        return Status("system", {}, "GPUDL_HOST_ALLOCATOR=system")
    version = glibc_version()
    if version is None:
        return Status("system", {}, "the C library is not glibc: nothing to tune")
    user = user_malloc_settings()
    if user:
        return Status("system", {}, f"glibc {version}: left as the user set it ({', '.join(user)})")
    mallopt = libc_mallopt()
    made = {}
    for name, (parameter, value) in SETTINGS.items():
        if mallopt(parameter, value) == 1:
            made[name] = value
    rejected = sorted(set(SETTINGS) - set(made))
    note = f"; glibc rejected {', '.join(rejected)}" if rejected else ""
    return Status("caching" if made else "system", made,
                  f"glibc {version}: freed blocks below 2 GiB stay in the process{note}")


def libc_mallopt():
    """glibc's ``int mallopt(int param, int value)`` (1 on success, 0 when rejected)."""
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def describe() -> str:
    """One line for ``gpudl info``: the policy, the settings made and why."""
    current = configure()
    settings = " ".join(f"{name}={value}" for name, value in current.settings.items())
    return f"{current.policy} ({current.reason}{'; ' + settings if settings else ''})"


def reset():
    """Forget the decision (tests change the environment and ask again; settings already made
    stay in effect, as mallopt cannot be undone without knowing glibc's dynamic state)."""
    global _status
    _status = None
