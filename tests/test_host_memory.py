"""The host allocator keeps freed step memory in the process (gpudl.backend.host_memory).

Effects are measured in child processes (mallopt settings are process-wide and cannot be undone),
by counting minor page faults, never by wall-clock time."""
import json
import os
import subprocess
import sys

import pytest

from cli_helpers import one_error_line, run_cli
from conftest import subprocess_env
from gpudl import benchmark
from gpudl.backend import host_memory
from gpudl.backend.selection import BackendError

needs_glibc = pytest.mark.skipif(host_memory.glibc_version() is None,
                                 reason="mallopt tuning applies to glibc only")

# Repeats a step-like pattern (allocate, fill, compute, free) of an 8 MiB and a 64 MiB array
# after the NumPy backend's first use, and prints the minor faults of the last repeats.
_FAULTS = r"""
import json, resource
import numpy
import gpudl
from gpudl.backend import NUMPY, host_memory
NUMPY.fused
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for repeat in range(8):
    before = faults()
    for megabytes in (8, 64):
        a = numpy.ones((megabytes << 20) // 4, numpy.float32)
        b = a * 2
        del a, b
    counts.append(faults() - before)
print(json.dumps({"faults": counts[3:], "policy": host_memory.configure().policy}))
"""

# Runs training steps of bench models; prints resident memory and minor faults of each step.
_STEPS = r"""
import json, os, resource
import gpudl
from gpudl.benchmark import make_step
def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
out = {}
for model, batch in (("mlp", 512), ("cnn", 64), ("transformer", 64)):
    step = make_step(model, batch)
    rss, counts = [], []
    for _ in range(30):
        before = faults()
        step()
        counts.append(faults() - before)
        rss.append(resident())
    out[model] = {"rss": rss, "faults": counts}
print(json.dumps(out))
"""


def _child(script, **environment):
    env = {name: value for name, value in subprocess_env().items()
           if not name.startswith("MALLOC_") and name != "GLIBC_TUNABLES"}
    # Host memory is the NumPy backend's: the children run on it whatever the suite's backend.
    env.update(environment, GPUDL_BACKEND="numpy", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture
def fresh(monkeypatch):
    """A fresh decision in this process, with no user malloc variables."""
    for name in list(os.environ):
        if name.startswith("MALLOC_") or name == "GLIBC_TUNABLES":
            monkeypatch.delenv(name)
    monkeypatch.delenv("GPUDL_HOST_ALLOCATOR", raising=False)
    host_memory.reset()
    yield
    host_memory.reset()


@needs_glibc
def test_freed_step_memory_is_reused_without_page_faults():
    caching = _child(_FAULTS)
    system = _child(_FAULTS, GPUDL_HOST_ALLOCATOR="system")
    assert caching["policy"] == "caching" and system["policy"] == "system"
    # 72 MiB touched per repeat: glibc's defaults map (part of) it afresh each time.
    assert min(system["faults"]) > 20, system
    assert max(caching["faults"]) <= 2, caching


@needs_glibc
def test_training_steps_stop_faulting_and_resident_memory_plateaus():
    caching = _child(_STEPS)
    for model, measured in caching.items():
        series = measured["rss"]
        # Growth after the first steps stays within 4 MiB (no leak, no fragmentation creep).
        assert max(series[10:]) - series[10] <= 4 << 20, (model, series)
        # A few stray faults (Python objects, a new small block) remain; thousands are gone.
        assert max(measured["faults"][3:]) <= 16, (model, measured["faults"])


@needs_glibc
def test_caching_sets_both_thresholds(fresh):
    done = host_memory.configure()
    assert done.policy == "caching"
    assert done.settings == {"M_MMAP_THRESHOLD": 2 ** 31 - 1, "M_TRIM_THRESHOLD": 2 ** 31 - 1}
    assert done.reason.startswith(f"glibc {host_memory.glibc_version()}")
    assert "M_MMAP_THRESHOLD=2147483647" in host_memory.describe()


def test_info_and_bench_environment_show_the_allocator(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    version = host_memory.glibc_version()
    why = (f"glibc {version}: left as the user set it (MALLOC_ARENA_MAX)" if version
           else "the C library is not glibc")
    assert f"host allocator: system ({why}" in result.stdout
    shown = benchmark.environment()["host_allocator"]
    assert shown == host_memory.configure()._asdict()
    assert set(shown) == {"policy", "settings", "reason"}


def test_invalid_choice_is_one_error_line_of_the_cli(monkeypatch):
    monkeypatch.setenv("GPUDL_HOST_ALLOCATOR", "never")
    assert "GPUDL_HOST_ALLOCATOR='never' is not valid" in one_error_line(run_cli("info"))


def test_opt_out_changes_nothing(fresh, monkeypatch):
    monkeypatch.setenv("GPUDL_HOST_ALLOCATOR", "System ")
    monkeypatch.setattr(host_memory, "libc_mallopt", _no_mallopt)
    done = host_memory.configure()
    assert done == host_memory.Status("system", {}, "GPUDL_HOST_ALLOCATOR=system")


@pytest.mark.parametrize("name, value", [("MALLOC_ARENA_MAX", "2"),
                                         ("MALLOC_TRIM_THRESHOLD_", "0"),
                                         ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=1")])
def test_user_malloc_settings_are_respected(fresh, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    monkeypatch.setattr(host_memory, "glibc_version", lambda: "2.36")
    monkeypatch.setattr(host_memory, "libc_mallopt", _no_mallopt)
    done = host_memory.configure()
    assert done.policy == "system" and done.settings == {}
    assert name in done.reason and "left as the user set it" in done.reason


def test_other_c_libraries_are_left_alone(fresh, monkeypatch):
    monkeypatch.setattr(host_memory.os, "confstr", _not_glibc)
    monkeypatch.setattr(host_memory, "libc_mallopt", _no_mallopt)
    assert host_memory.glibc_version() is None
    done = host_memory.configure()
    assert done == host_memory.Status("system", {}, "the C library is not glibc: nothing to tune")


def test_rejected_settings_are_reported(fresh, monkeypatch):
    monkeypatch.setattr(host_memory, "glibc_version", lambda: "2.36")
    monkeypatch.setattr(host_memory, "libc_mallopt", lambda: _Mallopt(accepts=False))
    done = host_memory.configure()
    assert done.policy == "system" and done.settings == {}
    assert "rejected M_MMAP_THRESHOLD, M_TRIM_THRESHOLD" in done.reason


def test_invalid_choice_is_a_clear_error(fresh, monkeypatch):
    monkeypatch.setenv("GPUDL_HOST_ALLOCATOR", "jemalloc")
    with pytest.raises(BackendError, match=r"GPUDL_HOST_ALLOCATOR='jemalloc' is not valid; "
                                           r"valid values are: caching, system"):
        host_memory.configure()


def test_decision_is_made_once(fresh, monkeypatch):
    calls = []
    monkeypatch.setattr(host_memory, "glibc_version", lambda: "2.36")
    monkeypatch.setattr(host_memory, "libc_mallopt", lambda: _Mallopt(True, calls))
    first = host_memory.configure()
    assert host_memory.configure() is first
    assert calls == [(-3, 2 ** 31 - 1), (-1, 2 ** 31 - 1)]


class _Mallopt:
    """A mallopt that accepts or rejects every setting, recording the calls."""

    def __init__(self, accepts, calls=None):
        self.accepts = accepts
        self.calls = [] if calls is None else calls

    def __call__(self, parameter, value):
        self.calls.append((parameter, value))
        return int(self.accepts)


def _no_mallopt():
    raise AssertionError("mallopt must not be called")


def _not_glibc(name):
    raise ValueError("unrecognized configuration name")
