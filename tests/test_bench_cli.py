"""``gpudl bench`` end to end on tiny settings, and the measurement helpers of gpudl.benchmark."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpudl
from gpudl import backend, benchmark, cli, models

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--batch-sizes", "1,4", "--steps", "2", "--warmup", "0", "--threads", "1", "--no-progress"]


def _bench(*args, env=None):
    return subprocess.run([sys.executable, "-m", "gpudl.cli", "bench", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)


def test_mlp_table_json_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = _bench("mlp", *TINY, "--passes", "2", "--json", tmp_path / "r.json", "--plot", tmp_path / "r.png")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(k for k, line in enumerate(lines) if line.lstrip().startswith("batch"))
    for column in ("gpudl ms (IQR)", "samples/s", "peak MB", "GEMM floor ms", "floor/step"):
        assert column in lines[header]
    rows = [line.split() for line in lines[header + 1:header + 3]]
    assert [row[0] for row in rows] == ["1", "4"]
    assert "knee (gpudl): batch " in out.stdout and "load average" in out.stdout

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["settings"]["threads"] == 1 and report["settings"]["passes"] == 2
    environment = report["environment"]["gpudl"]
    assert environment["numpy"] == backend.NUMPY.version() and environment["gpudl"] == gpudl.__version__
    assert environment["thread_variables"] == {name: "1" for name in benchmark.THREAD_VARIABLES}
    assert environment["thread_pools"] and environment["backend"] in ("numpy", "cupy")
    assert len(report["load_average"]["before"]) == 3
    results = report["results"]["gpudl"]
    assert [r["batch_size"] for r in results] == [1, 4]
    for row in results:
        assert len(row["times_seconds"]) == 2 and all(len(one) == 2 for one in row["times_seconds"])
        assert all(t > 0 for one in row["times_seconds"] for t in one)
        step = row["step_seconds"]
        assert step["min"] <= step["q1"] <= step["median"] <= step["q3"] <= step["max"]
        assert row["samples_per_s"] == pytest.approx(row["batch_size"] / step["median"])
        assert row["peak_memory_bytes"] > 4 * 669_706  # at least the MLP's float32 parameters
        assert 0 < row["gemm_floor_seconds"]["median"]
    assert report["knee"]["gpudl"] in (1, 4)
    assert report["pass_order"] == [["gpudl"], ["gpudl"]]
    png = (tmp_path / "r.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


@pytest.mark.parametrize("model", ["cnn", "lstm"])
def test_other_models_print_a_row_per_batch_size(model, tmp_path):
    out = _bench(model, *TINY, "--passes", "1", "--json", tmp_path / "r.json")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["batch_size"] for r in report["results"]["gpudl"]] == [1, 4]
    assert "gemm_floor_seconds" not in report["results"]["gpudl"][0]  # the GEMM floor is shown for the MLP
    assert "GEMM floor" not in out.stdout


def test_compare_torch_interleaves_passes_with_equal_threads(tmp_path):
    pytest.importorskip("torch")
    out = _bench("mlp", *TINY, "--passes", "3", "--compare", "torch", "--backend", "numpy",
                 "--json", tmp_path / "r.json")
    assert out.returncode == 0, out.stderr
    assert "gpudl/torch (min-max)" in out.stdout and "knee (torch)" in out.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["pass_order"] == [["gpudl", "torch"], ["torch", "gpudl"], ["gpudl", "torch"]]
    assert report["environment"]["torch"]["torch_threads"] == 1
    assert report["environment"]["torch"]["thread_variables"]["OMP_NUM_THREADS"] == "1"
    for ratio, mine, theirs in zip(report["speed_ratio"], report["results"]["gpudl"], report["results"]["torch"]):
        expected = [t / g for g, t in zip(mine["pass_median_seconds"], theirs["pass_median_seconds"])]
        assert ratio["per_pass"] == pytest.approx(expected)
        assert ratio["min"] <= ratio["median"] <= ratio["max"]


def test_compare_torch_without_torch_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # what an environment without PyTorch looks like
    assert cli.main(["bench", "mlp", *TINY, "--compare", "torch"]) == 1
    err = capsys.readouterr().err
    assert "--compare torch needs PyTorch" in err and "pip install torch" in err


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main(["bench", "mlp", *TINY, "--plot"]) == 1
    assert "--plot needs matplotlib" in capsys.readouterr().err


@pytest.mark.parametrize("args", [
    [], ["rnn"], ["mlp", "--batch-sizes", "0,8"], ["mlp", "--batch-sizes", "a,b"], ["mlp", "--batch-sizes", ","],
    ["mlp", "--steps", "0"], ["mlp", "--warmup", "-1"], ["mlp", "--threads", "0"], ["mlp", "--passes", "0"],
    ["mlp", "--compare", "tensorflow"], ["mlp", "--backend", "tpu"],
])
def test_bad_arguments_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", *args])
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.skipif(backend.cupy_gpu_usable(), reason="a usable GPU makes --backend cupy succeed")
def test_a_failing_worker_exits_1_with_its_reason():
    out = _bench("mlp", *TINY, "--backend", "cupy")
    assert out.returncode == 1
    assert out.stderr.startswith("gpudl: error: gpudl: BackendError") and len(out.stderr.splitlines()) == 1


def test_knee_is_the_smallest_batch_size_within_90_percent_of_the_best():
    assert benchmark.knee([1, 8, 32, 128], [100, 700, 910, 1000]) == 32
    assert benchmark.knee([1, 8, 32, 128], [100, 700, 899, 1000]) == 128
    assert benchmark.knee([1, 8], [500, 400]) == 1


def test_summary_and_ratios():
    summary = benchmark.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert summary == {"median": 3.0, "q1": 2.0, "q3": 4.0, "min": 1.0, "max": 5.0}
    assert benchmark.summarize([2.0])["q1"] == benchmark.summarize([2.0])["q3"] == 2.0
    ratios = benchmark.ratio_summary([2.0, 3.0, 8.0], [1.0, 1.0, 2.0])
    assert ratios == {"per_pass": [2.0, 3.0, 4.0], "median": 3.0, "min": 2.0, "max": 4.0}


def test_linear_products_are_the_mlp_steps_matrix_products():
    shapes = [(a.shape, b.shape) for a, b in benchmark.linear_products(models.MLP(), 16)]
    assert shapes == [((16, 784), (784, 512)), ((512, 16), (16, 784)),                           # first layer: no gx
                      ((16, 512), (512, 512)), ((512, 16), (16, 512)), ((16, 512), (512, 512)),
                      ((16, 512), (512, 10)), ((10, 16), (16, 512)), ((16, 10), (10, 512))]


def test_training_step_updates_the_parameters():
    step = benchmark.make_step("mlp", 8)
    before = [p.numpy() for p in step.model.parameters()]
    step()
    after = [p.numpy() for p in step.model.parameters()]
    assert all(a.shape == b.shape and (a != b).any() for a, b in zip(before, after))
    with pytest.raises(ValueError, match="unknown model 'rnn'"):
        benchmark.make_step("rnn", 8)


def cnn_outputs_and_grads(model, x):
    """Logits, input gradient and parameter gradients of ``model`` on float64 input ``x``."""
    inputs = gpudl.tensor(x, requires_grad=True)
    out = model(inputs)
    (out * gpudl.tensor(np.random.default_rng(1).standard_normal(out.shape))).sum().backward()
    return [out.numpy(), inputs.grad.numpy()] + [p.grad.numpy() for p in model.parameters()]


def test_bench_cnn_is_conv_relu_pool_and_computes_what_the_models_cnn_computes():
    gpudl.manual_seed(0)
    functional = benchmark.build_model("cnn").double()
    assert isinstance(functional, benchmark.FunctionalCNN)
    assert [name for name, _ in functional.named_parameters()] == [
        f"{layer}.{kind}" for layer in ("conv1", "conv2", "fc1", "fc2") for kind in ("weight", "bias")]
    pool_first = models.CNN().double()  # ReLU after max-pool: the same numbers on a quarter of the elements
    with gpudl.no_grad():
        for mine, theirs in zip(pool_first.parameters(), functional.parameters(), strict=True):
            mine.copy_(theirs)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28))
    for a, b in zip(cnn_outputs_and_grads(functional, x), cnn_outputs_and_grads(pool_first, x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_bench_cnn_matches_its_pytorch_twin():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed here (it lives in .venv-torch)")
    from gpudl.benchmark_torch import build
    gpudl.manual_seed(0)
    model = benchmark.build_model("cnn").double()
    reference = build("cnn").double()
    reference.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in model.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((2, 1, 28, 28))
    np.testing.assert_allclose(model(gpudl.tensor(x)).numpy(), reference(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-10)
