"""scripts/gpu_check.sh: refuses cleanly without a GPU; its summary reads pytest's JUnit XML and
the bench JSON. (The check itself needs a CUDA machine: see README, "Checking on a GPU".)"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "gpu_check.sh"
_spec = importlib.util.spec_from_file_location("gpu_check_summary", REPO / "scripts" / "gpu_check_summary.py")
summary_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(summary_module)

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="2" skipped="3" tests="20" time="187.4">
<testcase classname="tests.test_ops" name="test_add[cuda]" time="0.1"/>
<testcase classname="tests.test_ops" name="test_mul[cuda]" time="0.1"><failure message="x">boom</failure></testcase>
<testcase classname="tests.test_nn" name="test_conv[cuda]" time="0.1"><failure message="y">boom</failure></testcase>
<testcase classname="tests.test_io" name="test_load" time="0.1"><error message="z">boom</error></testcase>
</testsuite></testsuites>
"""


def _bench(model, torch):
    rows = [{"batch_size": b, "samples_per_s": rate, "device_counts_per_step": None}
            for b, rate in ((32, 41000.0), (256, 250000.0))]
    report = {"model": model, "results": {"gpudl": rows}}
    if torch:
        report["results"]["torch"] = [dict(r, samples_per_s=2 * r["samples_per_s"]) for r in rows]
        report["speed_ratio"] = [{"batch_size": r["batch_size"], "median": 0.5} for r in rows]
    return json.dumps(report)


def _folder(tmp_path, tests_status=0, with_torch=True, models=("mlp", "cnn", "lstm")):
    (tmp_path / "gpu.txt").write_text("NVIDIA H100 80GB HBM3 (1 GPU), CuPy 14.2.0, CUDA runtime 13000\n")
    (tmp_path / "pytest.xml").write_text(JUNIT)
    status = [f"tests {tests_status}"] + [f"bench_{m} 0" for m in models] + ["seconds 331"]
    (tmp_path / "status.txt").write_text("\n".join(status) + "\n")
    for model in models:
        (tmp_path / f"bench_{model}.json").write_text(_bench(model, with_torch))
    return tmp_path


def test_summary_counts_tests_and_lists_failures(tmp_path):
    text, ok = summary_module.summary(_folder(tmp_path, tests_status=1))
    assert not ok
    lines = text.splitlines()
    assert lines[0] == "gpudl GPU check on NVIDIA H100 80GB HBM3 (1 GPU), CuPy 14.2.0, CUDA runtime 13000"
    assert lines[1] == "tests (GPUDL_BACKEND=cupy): 14 passed, 2 failed, 1 errors, 3 skipped in 187 s"
    assert lines[2:5] == ["  FAILED tests.test_ops::test_mul[cuda]", "  FAILED tests.test_nn::test_conv[cuda]",
                          "  FAILED tests.test_io::test_load"]
    assert lines[-1].startswith("total 5m31s; FAILURES")
    assert len(lines) <= 24  # one screen


def test_summary_reports_samples_and_ratios(tmp_path):
    folder = _folder(tmp_path)
    (folder / "pytest.xml").write_text(JUNIT.replace('errors="1" failures="2"', 'errors="0" failures="0"')
                                       .replace("<failure message=\"x\">boom</failure>", "")
                                       .replace("<failure message=\"y\">boom</failure>", "")
                                       .replace("<error message=\"z\">boom</error>", ""))
    text, ok = summary_module.summary(folder)
    assert ok, text
    assert "  mlp   batch 32: 41,000 vs torch 82,000 (0.50x); batch 256: 250,000 vs torch 500,000 (0.50x)" in text
    assert text.splitlines()[-1].startswith("total 5m31s; ALL PASSED")


def test_summary_without_torch_or_results(tmp_path):
    folder = _folder(tmp_path, with_torch=False, models=("mlp",))
    text, ok = summary_module.summary(folder)
    assert "  mlp   batch 32: 41,000; batch 256: 250,000" in text
    assert "  cnn   no result (exit status ?; see bench_cnn.log)" in text
    assert not ok


def test_summary_command_exit_status(tmp_path):
    folder = _folder(tmp_path)
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check_summary.py"), str(folder)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "2 failed" in run.stdout
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check_summary.py")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "usage" in run.stderr


@pytest.mark.skipif(os.environ.get("GPUDL_CUPY_DOUBLE") == "1" or
                    subprocess.run([sys.executable, "-c", "import cupy; cupy.arange(1).sum()"],
                                   capture_output=True).returncode == 0,
                    reason="a usable GPU (or the CuPy double) is present: the refusal cannot be shown here")
def test_script_refuses_cleanly_without_a_gpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GPUDL_CUPY_DOUBLE"}
    env["PYTHON"] = sys.executable
    run = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 3, run.stderr
    assert "gpu_check: no usable CUDA GPU through CuPy" in run.stderr
    assert "nothing was tested" in run.stderr
    assert not (tmp_path / "out" / "pytest.xml").exists()


def test_script_usage():
    run = subprocess.run(["bash", str(SCRIPT), "a", "b"], capture_output=True, text=True)
    assert run.returncode == 2 and "usage: scripts/gpu_check.sh [OUTDIR]" in run.stderr
