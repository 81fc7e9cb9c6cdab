"""`gpudl train` explains itself: numbered runs, --resume's report and refusals, errors naming flags, --help
defaults, line-based progress, integer epoch ticks, README's commands and scripts/test.sh's pass labels."""
import json
import re
import shlex

import pytest

import gpudl
from gpudl import backend, cli
from gpudl.commands import train as train_command

from cli_helpers import last_line_accuracy, one_error_line, run_cli, write_fake_fashion
from conftest import REPO

QUICK = ("--epochs", 1, "--batch-size", 64, "--no-progress")


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    return write_fake_fashion(tmp_path_factory.mktemp("fashion"))


def test_new_runs_are_numbered_and_resume_continues_the_newest(fake_data, tmp_path):
    for number in (1, 2):
        result = run_cli("train", "mlp", *QUICK, "--data", fake_data, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"run folder runs/mlp/{number}" in result.stdout
        last_line_accuracy(result)
    assert sorted(p.name for p in (tmp_path / "runs" / "mlp").iterdir()) == ["1", "2"]
    first = (tmp_path / "runs" / "mlp" / "1" / "checkpoint.npz").read_bytes()

    resumed = run_cli("train", "mlp", *QUICK[2:], "--epochs", 2, "--lr", 0.002, "--data", fake_data, "--resume",
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert ("resuming from epoch 2 of 2 (runs/mlp/2/checkpoint.npz, 1 done); changed: --epochs 1 -> 2, "
            "--lr 0.001 -> 0.002") in resumed.stdout
    assert "epoch 1/2" not in resumed.stdout and "epoch 2/2: train loss" in resumed.stdout
    state = gpudl.load(tmp_path / "runs" / "mlp" / "2" / "checkpoint.npz")
    assert state["epoch"] == 2 and state["optimizer"]["param_groups"][0]["lr"] == 0.002  # the new --lr is used
    assert (tmp_path / "runs" / "mlp" / "1" / "checkpoint.npz").read_bytes() == first


def test_nothing_left_to_train_says_so_and_writes_nothing(fake_data, tmp_path):
    assert run_cli("train", "mlp", *QUICK, "--data", fake_data, "--out", tmp_path).returncode == 0
    files = {name: (tmp_path / name).read_bytes() for name in ("checkpoint.npz", "history.json")}
    again = run_cli("train", "mlp", *QUICK, "--data", fake_data, "--out", tmp_path, "--resume")
    assert again.returncode == 0, again.stderr
    assert (f"nothing left to train: {tmp_path / 'checkpoint.npz'} has done 1 of --epochs 1 (no setting changed); "
            "pass --epochs 2 or more to train on") in again.stdout
    assert "epoch 1/1" not in again.stdout
    assert last_line_accuracy(again) == pytest.approx(100 * json.loads(files["history.json"])["test_acc"], abs=0.01)
    assert {name: (tmp_path / name).read_bytes() for name in files} == files


def test_out_holding_a_run_is_refused_with_a_hint(fake_data, tmp_path):
    assert run_cli("train", "mlp", *QUICK, "--data", fake_data, "--out", tmp_path).returncode == 0
    line = one_error_line(run_cli("train", "mlp", *QUICK, "--data", fake_data, "--out", tmp_path))
    assert f"--out {tmp_path} already holds a run (checkpoint.npz, history.json): pass --resume" in line


@pytest.mark.parametrize("change, expected", [
    (("cnn", "--optimizer", "adam"), "is a run of mlp with adam; this run asks for cnn with adam"),
    (("mlp", "--optimizer", "sgd"), "is a run of mlp with adam; this run asks for mlp with sgd"),
    (("mlp", "--freeze", "1"), "is a run of mlp with adam; this run asks for mlp with adam (--freeze 1)")])
def test_resume_of_another_model_or_optimizer_is_a_one_line_error(fake_data, tmp_path, change, expected):
    assert run_cli("train", "mlp", *QUICK, "--data", fake_data, "--out", tmp_path).returncode == 0
    model, *options = change
    line = one_error_line(run_cli("train", model, *QUICK, *options, "--data", fake_data, "--resume",
                                   tmp_path / "checkpoint.npz", "--out", tmp_path / "other"))
    assert f"--resume: {tmp_path / 'checkpoint.npz'} {expected}" in line


def test_resume_of_a_checkpoint_without_settings_checks_the_weights(fake_data, tmp_path):
    assert run_cli("train", "mlp", *QUICK, "--data", fake_data, "--out", tmp_path).returncode == 0
    state = gpudl.load(tmp_path / "checkpoint.npz")
    del state["config"]  # as written by fit() without config=
    gpudl.save(state, tmp_path / "checkpoint.npz")
    line = one_error_line(run_cli("train", "cnn", *QUICK, "--data", fake_data, "--out", tmp_path, "--resume"))
    assert f"--resume: {tmp_path / 'checkpoint.npz'} does not fit this cnn model: missing from the checkpoint: " \
           "0.weight, 0.bias, 7.weight" in line
    resumed = run_cli("train", "mlp", *QUICK[2:], "--epochs", 2, "--data", fake_data, "--out", tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from epoch 2 of 2" in resumed.stdout and "what changed is unknown" in resumed.stdout


def test_resume_without_any_run_names_the_flag(fake_data, tmp_path):
    line = one_error_line(run_cli("train", "lstm", "--data", fake_data, "--resume", cwd=tmp_path))
    assert "--resume: no run of lstm to resume in runs/lstm/" in line and "pass --resume CHECKPOINT" in line


def test_backend_cupy_error_names_the_flag(monkeypatch):
    monkeypatch.setattr(backend.selection, "cupy_gpu_usable", lambda: False)
    with pytest.raises(backend.BackendError) as error:
        train_command._select_backend("cupy")
    message = str(error.value)
    assert message.startswith("--backend cupy needs ") and "GPUDL_BACKEND" not in message
    assert "--backend numpy or auto" in message or "not installed" in message


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    subparsers = next(a for a in cli.build_parser()._actions if a.dest == "command")
    for action in subparsers.choices["train"]._actions:
        if action.default is not None and action.default is not False and action.option_strings and \
                action.dest != "help":
            assert f"(default: {action.default})" in text, action.option_strings


def test_progress_is_line_based_when_not_a_terminal(fake_data, tmp_path):
    # 540 training examples in batches of 8: 68 steps, progress read at step 50 (log_interval)
    result = run_cli("train", "mlp", "--epochs", 1, "--batch-size", 8, "--data", fake_data, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\r" not in result.stdout
    progress = [line for line in result.stderr.splitlines() if line.startswith("epoch 1/1: 50/68 batches, loss ")]
    assert len(progress) == 1 and "samples/s" in progress[0]


def test_plot_has_integer_epoch_ticks():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    from gpudl.plotting import history_figure
    for epochs in (1, 2, 5):
        history = {"train_loss": [1.0 / (k + 1) for k in range(epochs)], "train_acc": [0.5] * epochs,
                   "val_loss": [1.0] * epochs, "val_acc": [0.4] * epochs}
        figure = history_figure(history)
        figure.canvas.draw()
        for axes in figure.axes:
            low, high = axes.get_xlim()
            ticks = [tick for tick in axes.get_xticks() if low <= tick <= high]
            assert ticks == list(range(1, epochs + 1)), (epochs, ticks)
        plt.close(figure)


def _readme_commands():
    """Each ``gpudl ...`` command in README's bash blocks, as the argument list after ``gpudl``."""
    text = (REPO / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            while words and "=" in words[0]:  # VAR=value prefixes
                words = words[1:]
            if words and words[0] in ("gpudl", ".venv/bin/gpudl"):
                ends = [k for k, word in enumerate(words) if word in ("|", "||", "&&", ";", ">", ">>", "2>&1")]
                yield line.strip(), words[1:ends[0] if ends else None]  # gpudl's own arguments


def test_readme_gpudl_commands_parse_and_readme_says_how_to_get_gpudl_on_path():
    commands = list(_readme_commands())
    assert len(commands) >= 5
    parser = cli.build_parser()
    for line, words in commands:
        try:
            parser.parse_args(words)
        except SystemExit as exit_:
            assert exit_.code == 0, f"README command does not parse: {line}"
    readme = (REPO / "README.md").read_text()
    assert ". .venv/bin/activate" in readme and "--no-progress" in readme


def test_test_script_labels_each_pass():
    """Each pass of scripts/test.sh (pytest runs or the CUDA 12 kernel check) follows its label, numbered k/N."""
    events = []
    for line in (REPO / "scripts" / "test.sh").read_text().splitlines():
        line = line.strip()
        if line.startswith('echo "== pass '):
            events.append(("label", line))
        elif not line.startswith("#") and re.search(r"python -m pytest|bash scripts/check_kernels", line):
            events.append(("pass", line))
    kinds = "".join("L" if kind == "label" else "p" for kind, _ in events)
    assert re.fullmatch(r"(Lp+){3,}", kinds), events  # a label before the first run and between any two passes
    labels = [line for kind, line in events if kind == "label"]
    for k, label in enumerate(labels, 1):
        assert f"== pass {k}/{len(labels)}: " in label
