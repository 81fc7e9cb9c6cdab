"""Backend selection (GPUDL_BACKEND), devices, dtypes and the `gpudl info` command."""
import subprocess
import sys

import numpy as np
import pytest

import gpudl
from gpudl import backend
from gpudl.backend import selection

from conftest import subprocess_env


def run_gpudl(*args, env_extra=None):
    env = subprocess_env(**(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "gpudl.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize("value", ["tpu", "cuda", "NumPy2"])
def test_invalid_backend_lists_valid_values(monkeypatch, value):
    monkeypatch.setenv("GPUDL_BACKEND", value)
    with pytest.raises(backend.BackendError, match=r"numpy, cupy, auto") as info:
        selection.requested_backend()
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value, expected", [("numpy", "numpy"), (" NumPy ", "numpy"), ("", "auto"),
                                             ("auto", "auto"), ("cupy", "cupy")])
def test_valid_backend_names(monkeypatch, value, expected):
    monkeypatch.setenv("GPUDL_BACKEND", value)
    assert selection.requested_backend() == expected


def test_cupy_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(backend.BackendError, match=r"gpudl\[cuda12\].*gpudl\[cuda13\]"):
        selection.resolve("cupy")
    assert selection.resolve("auto") == "numpy"
    assert not selection.cupy_gpu_usable()


def test_cupy_without_gpu_says_so(monkeypatch):
    class FakeCuda:
        @staticmethod
        def is_available():
            raise RuntimeError("cudaErrorInsufficientDriver")

    class FakeCupy:
        cuda = FakeCuda

    monkeypatch.setitem(sys.modules, "cupy", FakeCupy)
    with pytest.raises(backend.BackendError, match="no usable GPU"):
        selection.resolve("cupy")
    assert selection.resolve("auto") == "numpy"  # only auto falls back, silently


@pytest.mark.skipif(backend.cupy_gpu_usable(), reason="this machine has a usable GPU")
def test_gpudl_info_with_cupy_and_no_gpu_exits_with_clear_message():
    result = run_gpudl("info", env_extra={"GPUDL_BACKEND": "cupy"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "GPUDL_BACKEND=cupy" in result.stderr
    assert ("no usable GPU" in result.stderr) or ("not installed" in result.stderr)


def test_gpudl_info_reports_auto_choice():
    result = run_gpudl("info", env_extra={"GPUDL_BACKEND": "auto"})
    assert result.returncode == 0, result.stderr
    assert "GPUDL_BACKEND=auto -> backend" in result.stdout
    assert f"numpy {np.__version__}" in result.stdout


def test_gpudl_info_rejects_invalid_backend():
    result = run_gpudl("info", env_extra={"GPUDL_BACKEND": "tpu"})
    assert result.returncode == 1
    assert "valid values are: numpy, cupy, auto" in result.stderr


def test_cli_bad_arguments_exit_2():
    assert run_gpudl("no-such-command").returncode == 2


@pytest.mark.parametrize("spec, expected", [("cpu", "cpu"), ("cuda", "cuda:0"), ("cuda:3", "cuda:3"),
                                            ("CUDA:1", "cuda:1")])
def test_device_parsing(spec, expected):
    assert str(backend.Device.parse(spec)) == expected


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cpu:0", 3])
def test_bad_device_is_an_error(spec):
    with pytest.raises((ValueError, TypeError), match="device"):
        backend.Device.parse(spec)


def test_tensor_device_is_its_arrays(device):
    t = gpudl.ones(2, device=device)
    assert t.device == device
    assert t.cpu().device == "cpu"
    assert isinstance(t.numpy(), np.ndarray)


@pytest.mark.parametrize("spec, expected", [("float32", np.float32), (gpudl.float64, np.float64),
                                            (np.float16, np.float16), ("half", np.float16), ("double", np.float64),
                                            ("int64", np.int64), (bool, np.bool_)])
def test_dtype_specs(spec, expected):
    assert backend.dtype(spec) == np.dtype(expected)


def test_unknown_dtype_is_a_clear_error():
    with pytest.raises(TypeError, match="unknown dtype 'floaty'"):
        backend.dtype("floaty")


def test_manual_seed_reproduces_numbers():
    gpudl.manual_seed(123)
    a = gpudl.randn(5).numpy()
    b = gpudl.rand(3).numpy()
    gpudl.manual_seed(123)
    np.testing.assert_array_equal(gpudl.randn(5).numpy(), a)
    np.testing.assert_array_equal(gpudl.rand(3).numpy(), b)
    gpudl.manual_seed(124)
    assert not np.array_equal(gpudl.randn(5).numpy(), a)


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_manual_seed_rejects_bad_seeds(seed):
    with pytest.raises(ValueError, match="manual_seed"):
        gpudl.manual_seed(seed)


def test_dropout_key_advances_and_resets():
    gpudl.manual_seed(7)
    assert backend.next_dropout_key() == (7, 0)
    assert backend.next_dropout_key() == (7, 1)
    gpudl.manual_seed(7)
    assert backend.next_dropout_key() == (7, 0)


def test_kernel_headers_are_found():
    from gpudl.backend import kernel_source
    assert (kernel_source.kernel_dir() / "activations.cuh").is_file()
