"""The training loop and `gpudl train`: reproducibility, resume after a kill, the CLI end to end."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gpudl
from gpudl import nn, optim
from gpudl.data import DataLoader, FashionMNIST, TensorDataset, random_split, spiral
from gpudl.train import METRICS, evaluate, fit

from cli_helpers import last_line_accuracy, one_error_line, run_cli, write_fake_fashion
from conftest import subprocess_env
REAL_DATA = Path(os.environ.get("GPUDL_DATA", "/usr/share/datasets/fashion-mnist"))


def _has_real_data():
    try:
        FashionMNIST(split="test", limit=1)
        return True
    except Exception:
        return False


needs_real_data = pytest.mark.skipif(not _has_real_data(), reason=f"Fashion-MNIST not found at {REAL_DATA}; "
                                                                   "apt-get install dataset-fashion-mnist")


def _spiral_run(seed, epochs=3, dropout=0.2):
    gpudl.manual_seed(seed)
    x, t = spiral(n_per_class=60, n_classes=3, seed=seed)
    train, val = random_split(TensorDataset(x, t), [0.8, 0.2], seed=seed)
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 3))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    history = fit(model, nn.functional.softmax_cross_entropy, opt, DataLoader(train, 16, shuffle=True, seed=seed),
                  DataLoader(val, 64), epochs=epochs, seed=seed, progress=False)
    return history, model


def test_same_seed_gives_identical_history():
    first, _ = _spiral_run(seed=1)
    second, _ = _spiral_run(seed=1)
    other, _ = _spiral_run(seed=2)
    for key in METRICS:
        assert first[key] == second[key]
    assert first["train_loss"] != other["train_loss"]
    assert len(first["train_loss"]) == 3 and len(first["epoch_seconds"]) == 3


def test_training_reduces_loss_and_evaluate_matches_history():
    history, model = _spiral_run(seed=0, epochs=30, dropout=0.0)
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    assert 0.0 <= history["val_acc"][-1] <= 1.0
    assert model.training  # evaluate restores train mode


def test_evaluate_uses_eval_mode_and_no_graph():
    gpudl.manual_seed(0)
    x, t = spiral(n_per_class=10)
    model = nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.9), nn.Linear(8, 3))
    loader = DataLoader(TensorDataset(x, t), batch_size=7)
    first = evaluate(model, nn.functional.softmax_cross_entropy, loader)
    second = evaluate(model, nn.functional.softmax_cross_entropy, loader)
    assert first == second  # dropout is off in eval mode
    assert all(p.grad is None for p in model.parameters())


def test_early_stopping_stops_after_patience():
    gpudl.manual_seed(0)
    x, t = spiral(n_per_class=20)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = optim.SGD(model.parameters(), lr=0.0)  # nothing changes: validation never improves after epoch 1
    history = fit(model, nn.functional.softmax_cross_entropy, opt, DataLoader(TensorDataset(x, t), 16),
                  DataLoader(TensorDataset(x, t), 64), epochs=10, early_stopping_patience=2, progress=False)
    assert len(history["val_loss"]) == 3


def test_early_stopping_needs_validation():
    model = nn.Linear(2, 3)
    with pytest.raises(ValueError, match="early stopping needs a val_loader"):
        fit(model, nn.functional.softmax_cross_entropy, optim.SGD(model.parameters()), [], epochs=1,
            early_stopping_patience=1)


# ----------------------------------------------------------------------------- the CLI on a small fake data set
@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    """Four IDX files of a learnable 10-class problem: each class lights up its own image band."""
    return write_fake_fashion(tmp_path_factory.mktemp("fashion"))


def test_cli_trains_and_writes_history_and_checkpoint(fake_data, tmp_path):
    result = run_cli("train", "mlp", "--epochs", 2, "--data", fake_data, "--out", tmp_path, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "epoch 2/2: train loss" in result.stdout
    accuracy = last_line_accuracy(result)
    assert accuracy > 80.0  # the bands make the fake problem easy
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["train_loss"]) == 2 and history["test_acc"] == pytest.approx(accuracy / 100, abs=1e-4)
    state = gpudl.load(tmp_path / "checkpoint.npz")
    assert state["epoch"] == 2 and "0.weight" not in state["model"] and "1.weight" in state["model"]


@pytest.mark.parametrize("args", [["train", "rnn"], ["train", "mlp", "--epochs", "0"],
                                  ["train", "mlp", "--lr", "-1"], ["train", "mlp", "--val-fraction", "1.5"],
                                  ["train", "mlp", "--optimizer", "lbfgs"]])
def test_cli_bad_arguments_exit_2(args):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_cli_missing_data_exits_1_with_one_line_reason(tmp_path):
    line = one_error_line(run_cli("train", "mlp", "--data", tmp_path / "nowhere", "--out", tmp_path / "out",
                                  "--no-progress"))
    assert "dataset-fashion-mnist" in line
    assert "pass --data FOLDER or set GPUDL_DATA" in line and "root=" not in line  # the flag a CLI user types


def test_cli_resume_without_checkpoint_exits_1(tmp_path, fake_data):
    result = run_cli("train", "mlp", "--data", fake_data, "--out", tmp_path, "--resume")
    assert result.returncode == 1 and "no checkpoint" in result.stderr


KILLER = textwrap.dedent("""
    import os, signal, sys
    import gpudl.nn.functional as F
    from gpudl import cli
    original, calls = F.softmax_cross_entropy, [0]
    def dying_loss(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(os.environ["KILL_AT_CALL"]):
            os.kill(os.getpid(), signal.SIGKILL)  # a real kill: no cleanup, no exception handlers
        return original(*args, **kwargs)
    F.softmax_cross_entropy = dying_loss
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_killed_run_resumes_to_the_same_history(fake_data, tmp_path):
    args = ["train", "mlp", "--epochs", 3, "--batch-size", 64, "--dropout", 0.2, "--data", fake_data,
            "--no-progress"]
    straight = run_cli(*args, "--out", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr

    # 540 training examples / 64 = 9 steps, + 1 validation batch: 10 loss calls per epoch; die in epoch 3
    env = subprocess_env(GPUDL_BACKEND=os.environ.get("GPUDL_BACKEND", "numpy"), KILL_AT_CALL="25")
    killed = subprocess.run([sys.executable, "-c", KILLER, *map(str, args), "--out", str(tmp_path / "resumed")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert killed.returncode == -9, killed.stderr
    checkpoint = tmp_path / "resumed" / "checkpoint.npz"
    assert gpudl.load(checkpoint)["epoch"] == 2  # the last finished epoch's checkpoint is intact
    assert not (tmp_path / "resumed" / "history.json").exists()
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["checkpoint.npz"]  # no temporaries left

    resumed = run_cli(*args, "--out", tmp_path / "resumed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "epoch 1/3" not in resumed.stdout and "epoch 3/3" in resumed.stdout
    expected = json.loads((tmp_path / "straight" / "history.json").read_text())
    got = json.loads((tmp_path / "resumed" / "history.json").read_text())
    for key in (*METRICS, "test_loss", "test_acc"):
        assert got[key] == expected[key], key


@needs_real_data
def test_cli_end_to_end_on_real_data(tmp_path):
    result = run_cli("train", "cnn", "--epochs", 1, "--limit", 1500, "--out", tmp_path, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "1350 training, 150 validation, 1500 test examples" in result.stdout
    accuracy = float(result.stdout.split("test accuracy: ")[1].split("%")[0])
    assert 40.0 < accuracy <= 100.0
    assert (tmp_path / "history.json").is_file() and (tmp_path / "checkpoint.npz").is_file()
