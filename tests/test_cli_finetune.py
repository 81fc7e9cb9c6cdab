"""Fine-tuning: gpudl.finetune (load_weights, freeze), `gpudl train --init-from --freeze`, and the example."""
import os
import subprocess
import sys

import numpy as np
import pytest

import gpudl
from gpudl import models, nn, optim
from gpudl.finetune import freeze, load_weights, trainable_parameters

from cli_helpers import last_line_accuracy, one_error_line, run_cli, write_fake_fashion
from conftest import REPO, subprocess_env, to_numpy


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    return write_fake_fashion(tmp_path_factory.mktemp("fashion"))


def _weights(model):
    return {name: to_numpy(value) for name, value in model.state_dict().items()}


def test_load_weights_copies_a_saved_model_and_freeze_keeps_it(device, tmp_path):
    source = models.MLP(hidden_sizes=(16, 8)).to(device)
    gpudl.save({"model": source.state_dict(), "epoch": 1}, tmp_path / "checkpoint.npz")
    model = models.MLP(hidden_sizes=(16, 8)).to(device)
    load_weights(model, tmp_path / "checkpoint.npz")
    expected = _weights(source)
    assert all(np.array_equal(value, expected[name]) for name, value in _weights(model).items())

    assert freeze(model, ["1", "3."]) == ["1.weight", "1.bias", "3.weight", "3.bias"]
    assert [p.requires_grad for p in model.parameters()] == [False, False, False, False, True, True]
    trainable = trainable_parameters(model)
    assert [p.shape for p in trainable] == [(10, 8), (10,)]
    optimizer = optim.SGD(trainable, lr=0.5)
    x = gpudl.randn(4, 784, device=device)
    loss = nn.functional.softmax_cross_entropy(model(x), gpudl.tensor([0, 1, 2, 3], device=device))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = _weights(model)
    for name in ("1.weight", "1.bias", "3.weight", "3.bias"):
        assert np.array_equal(after[name], expected[name]), name
        assert dict(model.named_parameters())[name].grad is None  # no gradient is even computed
    assert not np.array_equal(after["5.weight"], expected["5.weight"])


def test_load_weights_lists_every_mismatch_in_one_line():
    cnn_state = models.CNN().state_dict()
    model = models.MLP()
    before = _weights(model)
    with pytest.raises(ValueError) as error:
        load_weights(model, cnn_state)
    message = str(error.value)
    assert "\n" not in message and message.startswith("the state dict does not fit MLP: ")
    assert message.endswith("missing from the checkpoint: 1.weight, 1.bias, 5.weight, 5.bias; not in the model: "
                            "0.weight, 0.bias, 7.weight, 7.bias, 9.weight, 9.bias; different shapes: 3.weight "
                            "(64, 32, 3, 3) in the checkpoint, (512, 512) in the model, 3.bias (64,) in the "
                            "checkpoint, (512,) in the model")
    assert all(np.array_equal(value, before[name]) for name, value in _weights(model).items())  # unchanged


def test_freeze_matches_whole_name_parts_and_names_unknown_prefixes():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(11)])
    assert freeze(model, ["1"]) == ["1.weight", "1.bias"]  # not 10.weight
    assert model[10].weight.requires_grad
    with pytest.raises(ValueError, match=r"no parameter of Sequential is named '1\.w' or lies under it; its "
                                         r"parameters are 0\.weight, 0\.bias, 1\.weight"):
        freeze(model, ["1.w"])


# ----------------------------------------------------------------------------- the command line
def test_cli_init_from_and_freeze_train_only_the_rest(fake_data, tmp_path):
    common = ("--epochs", 1, "--data", fake_data, "--no-progress", "--batch-size", 64)
    pretrained = run_cli("train", "mlp", *common, "--out", tmp_path / "pretrained")
    assert pretrained.returncode == 0, pretrained.stderr
    tuned = run_cli("train", "mlp", *common, "--out", tmp_path / "tuned", "--lr", 0.01,
                    "--init-from", tmp_path / "pretrained" / "checkpoint.npz", "--freeze", "1", "--freeze", "3")
    assert tuned.returncode == 0, tuned.stderr
    assert f"initialised from {tmp_path / 'pretrained' / 'checkpoint.npz'}" in tuned.stdout
    assert "frozen: 1.weight, 1.bias, 3.weight, 3.bias; 5,130 of 669,706 weights train" in tuned.stdout
    assert last_line_accuracy(tuned) > 50.0
    before = gpudl.load(tmp_path / "pretrained" / "checkpoint.npz")
    after = gpudl.load(tmp_path / "tuned" / "checkpoint.npz")
    for name in ("1.weight", "1.bias", "3.weight", "3.bias"):
        assert np.array_equal(to_numpy(after["model"][name]), to_numpy(before["model"][name])), name
    assert not np.array_equal(to_numpy(after["model"]["5.weight"]), to_numpy(before["model"]["5.weight"]))
    assert [len(group["params"]) for group in after["optimizer"]["param_groups"]] == [2]  # only the head
    assert after["config"]["freeze"] == ["1", "3"]


def test_cli_init_from_another_model_is_a_one_line_error(fake_data, tmp_path):
    gpudl.save({"model": models.CNN().state_dict()}, tmp_path / "cnn.npz")
    line = one_error_line(run_cli("train", "mlp", "--data", fake_data, "--out", tmp_path / "out", "--init-from",
                                  tmp_path / "cnn.npz"))
    assert line.startswith(f"gpudl: error: --init-from: the checkpoint '{tmp_path / 'cnn.npz'}' does not fit MLP: "
                           "missing from the checkpoint: 1.weight")
    assert not (tmp_path / "out" / "checkpoint.npz").exists()


@pytest.mark.parametrize("freeze_args, message", [
    (["7"], "--freeze: no parameter of MLP is named '7' or lies under it; its parameters are 1.weight, 1.bias"),
    (["1", "3", "5"], "--freeze 1 3 5 freezes every parameter: nothing would train")])
def test_cli_bad_freeze_is_a_one_line_error(fake_data, tmp_path, freeze_args, message):
    assert message in one_error_line(run_cli("train", "mlp", "--data", fake_data, "--out", tmp_path, "--freeze",
                                             *freeze_args))


def test_finetune_example_trains_the_head_on_new_classes(fake_data):
    env = subprocess_env(GPUDL_BACKEND=os.environ.get("GPUDL_BACKEND", "numpy"))
    result = subprocess.run([sys.executable, str(REPO / "examples" / "finetune_fashion_mnist.py"), "--data",
                             str(fake_data), "--limit", "600", "--epochs", "2", "--batch-size", "16"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "froze 0.weight, 0.bias, 3.weight, 3.bias, 7.weight, 7.bias; fine-tuned the head (9.weight, 9.bias: " \
           "1,290 of 421,642 weights) on classes 5-9" in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    before, after = (float(part.split("%")[0].split()[-1]) for part in last.split(",")[:2])
    assert before < 20.0 < 60.0 < after  # the old head never predicts classes 5-9; the new one does
