"""Hyperparameter search (`gpudl tune`, `gpudl.tune`): search-space specs, resumable studies, grids run once per
point, worker processes on one storage, killed and interrupted workers, pruning, bad input, the Python API."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest

optuna = pytest.importorskip("optuna", reason="gpudl[tune] (Optuna) is not installed")

import gpudl  # noqa: E402
from gpudl import models, nn, optim, tune  # noqa: E402
from gpudl.cli import main  # noqa: E402
from gpudl.data import DataLoader, TensorDataset, random_split, spiral  # noqa: E402
from gpudl.train import fit  # noqa: E402

from conftest import subprocess_env  # noqa: E402
from test_train import needs_real_data  # noqa: E402

COMPLETE, RUNNING, FAIL = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING,
                           optuna.trial.TrialState.FAIL)


QUICK = ["--epochs", "1", "--limit", "3000", "--seed", "0"]


def _tune(tmp_path, *args, study=None):
    """``gpudl tune mlp`` in this process on ``tmp_path``'s SQLite storage; returns the exit code."""
    return main(["tune", "mlp", "--storage", f"sqlite:///{tmp_path}/study.db", "--out", str(tmp_path), *args]
                + ([] if study is None else ["--study", study]))


def _trials(tmp_path, study="mlp", states=None):
    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/study.db").get_trials(states=states)


# ----------------------------------------------------------------------------- search-space specs
def test_param_specs_parse_each_form():
    lr = tune.parse_param("lr", "log:1e-4:1e-1")
    assert (lr.kind, lr.low, lr.high, lr.integer) == ("log", 1e-4, 1e-1, False)
    dropout = tune.parse_param("dropout", "0:0.5")
    assert (dropout.kind, dropout.low, dropout.high) == ("uniform", 0.0, 0.5)
    width = tune.parse_param("width", "int:8:64")
    assert (width.kind, width.low, width.high, width.integer) == ("int", 8, 64, True)
    assert tune.parse_param("width", "log:16:256", integer=True).integer
    assert tune.parse_param("batch_size", "64,128,64").choices == (64, 128)  # repeats dropped, ints kept
    assert tune.parse_param("optimizer", "adam, sgd").choices == ("adam", "sgd")
    trial = optuna.trial.FixedTrial({"lr": 0.01, "width": 20, "act": "relu"})
    assert tune.suggest(trial, {"lr": "log:1e-4:1e-1", "width": "int:8:64", "act": "relu,gelu"}) == {
        "lr": 0.01, "width": 20, "act": "relu"}


@pytest.mark.parametrize("spec, reason", [("log:oops", "exactly LO:HI"), ("log:1e-4:x", "bad value 'x'"),
                                          ("log:0:1", "LO > 0"), ("0.5:0.1", "LO must be below HI"),
                                          ("1:2:3", "exactly LO:HI"), ("a,,b", "empty choice"), ("", "empty")])
def test_malformed_spec_names_the_parameter_and_the_forms(spec, reason):
    with pytest.raises(ValueError) as error:
        tune.parse_param("lr", spec)
    assert f"--param lr={spec}" in str(error.value) and reason in str(error.value)
    assert "log:LO:HI" in str(error.value) and "int:LO:HI" in str(error.value) and "a,b,c" in str(error.value)


def test_grid_needs_choices_and_lists_its_points():
    space = {"lr": tune.parse_param("lr", "0.001,0.01"), "batch_size": tune.parse_param("batch_size", "64,128")}
    assert tune.grid_points(tune.grid_of(space)) == [
        {"lr": 0.001, "batch_size": 64}, {"lr": 0.001, "batch_size": 128},
        {"lr": 0.01, "batch_size": 64}, {"lr": 0.01, "batch_size": 128}]
    with pytest.raises(ValueError, match="lr=log:1e-4:1e-1"):
        tune.grid_of({"lr": tune.parse_param("lr", "log:1e-4:1e-1")})


def test_worker_seeds_differ_by_worker_and_history_and_repeat():
    assert tune.worker_seed(0, 0, 0) == tune.worker_seed(0, 0, 0)
    assert len({tune.worker_seed(0, 0, 0), tune.worker_seed(0, 1, 0), tune.worker_seed(0, 0, 3),
                tune.worker_seed(1, 0, 0)}) == 4


# ----------------------------------------------------------------------------- bad input on the command line
@pytest.mark.parametrize("param, words", [
    ("lr=log:oops", ["--param lr=log:oops", "log:LO:HI", "LO:HI", "int:LO:HI", "a,b,c"]),
    ("dropout=0:1.5", ["dropout", "1.5", "1.0"]),
    ("batch_size=0.5:2", ["batch_size is an integer"]),
    ("optimizer=adam,lbfgs", ["optimizer", "lbfgs"]),
    ("lr", ["NAME=SPEC"]),
    ("depth=1:3", ["unknown parameter 'depth'", "lr, batch_size, weight_decay, dropout, optimizer, momentum, width"]),
])
def test_bad_param_exits_2_with_a_message_naming_it(tmp_path, capsys, param, words):
    with pytest.raises(SystemExit) as stop:
        _tune(tmp_path, "--param", param)
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("gpudl tune: error: ")
    for word in words:
        assert word in error
    assert not (tmp_path / "study.db").exists()  # nothing ran


def test_grid_with_a_range_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        _tune(tmp_path, "--sampler", "grid", "--param", "lr=log:1e-4:1e-1", "--param", "batch_size=64,128")
    assert stop.value.code == 2 and "given as a range: lr=log:1e-4:1e-1" in capsys.readouterr().err


def test_unreachable_storage_exits_1_with_one_line(tmp_path, capsys):
    code = main(["tune", "mlp", "--storage", f"sqlite:///{tmp_path}/missing/dir/study.db", "--out", str(tmp_path),
                 "--trials", "1", *QUICK])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("gpudl: error: cannot open storage sqlite:///") and "unable to open" in lines[0]


def test_show_of_a_missing_study_exits_1(tmp_path, capsys):
    assert main(["tune", "mlp", "--show", "--out", str(tmp_path)]) == 1
    assert "no study storage at" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the commands
@needs_real_data
def test_random_search_resumes_and_adds_trials(tmp_path, capsys):
    spaces = ["--sampler", "random", "--param", "lr=log:1e-4:1e-1", "--param", "dropout=0:0.5"]
    assert _tune(tmp_path, *QUICK, *spaces, "--trials", "3") == 0
    first = capsys.readouterr().out
    assert sum(line.startswith("trial ") and " complete: val acc " in line for line in first.splitlines()) == 3
    assert _tune(tmp_path, *QUICK, *spaces, "--trials", "2", "--retrain") == 0
    second = capsys.readouterr().out
    trials = _trials(tmp_path, states=(COMPLETE,))
    assert [trial.number for trial in trials] == [0, 1, 2, 3, 4]
    assert len({trial.params["lr"] for trial in trials}) == 5  # the re-run's sampler explores new points
    assert all(0.0 < trial.value <= 1.0 and 1e-4 <= trial.params["lr"] <= 1e-1 for trial in trials)
    for trial in trials:  # each trial is a gpudl train run in its own folder, without the test split
        history = (tmp_path / "mlp" / f"trial-{trial.number}" / "history.json").read_text()
        assert "val_acc" in history and "test_acc" not in history
    best = max(trials, key=lambda trial: trial.value)
    command = best.user_attrs["command"]
    assert command.startswith("gpudl train mlp --epochs 1 --seed 0 --limit 3000 --lr ") and f"{best.params['lr']!r}" in command
    assert f"best trial {best.number}: val acc {100 * best.value:.2f}%" in second and f"reproduce: {command}" in second
    assert f"best trial {best.number}: validation accuracy {100 * best.value:.2f}% in the search, test accuracy" \
        in second
    retrained = (tmp_path / "mlp" / f"best-trial-{best.number}" / "history.json").read_text()
    assert f"{best.value}" in retrained and "test_acc" in retrained  # same seed: the same validation accuracy
    with open(tmp_path / "mlp" / "trials.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["number"]) for row in rows] == [0, 1, 2, 3, 4] and rows[0]["command"].startswith("gpudl train")
    for plot in ("history.png", "importances.png", "parallel_coordinate.png"):
        assert (tmp_path / "mlp" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["tune", "mlp", "--show", "--storage", f"sqlite:///{tmp_path}/study.db"]) == 0
    shown = capsys.readouterr().out
    assert "study mlp: 5 trials (5 complete)" in shown and f"reproduce: {command}" in shown


@needs_real_data
def test_grid_runs_each_point_once(tmp_path, capsys):
    grid = ["--sampler", "grid", "--param", "lr=0.001,0.01", "--param", "batch_size=64,128"]
    assert _tune(tmp_path, *QUICK, *grid, study="grid") == 0
    points = sorted((trial.params["lr"], trial.params["batch_size"]) for trial in _trials(tmp_path, "grid"))
    assert points == [(0.001, 64), (0.001, 128), (0.01, 64), (0.01, 128)]
    assert all(trial.state == COMPLETE for trial in _trials(tmp_path, "grid"))
    assert _tune(tmp_path, *QUICK, *grid, study="grid") == 0  # every point has run: nothing more to do
    assert len(_trials(tmp_path, "grid")) == 4


@needs_real_data
def test_two_workers_share_one_storage_without_duplicates(tmp_path, capfd):
    small = ["--width", "32", "--param", "lr=0.001,0.003,0.01", "--param", "batch_size=64,128"]
    assert _tune(tmp_path, *QUICK, *small, "--sampler", "grid", "--workers", "2") == 0
    trials = _trials(tmp_path)
    assert len(trials) == 6 and all(trial.state == COMPLETE for trial in trials)
    assert len({(trial.params["lr"], trial.params["batch_size"]) for trial in trials}) == 6
    assert sorted(trial.number for trial in trials) == list(range(6))
    lines = [line for line in capfd.readouterr().out.splitlines() if line.startswith("trial ")]
    assert len(lines) == 6  # one line per finished trial, from both worker processes


def _wait_for(predicate, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gpudl tune ended early: {process.communicate()}")
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    process.kill()
    pytest.fail("timed out waiting for the study")


def _states_once_running(url):
    """The trials' (number, state, value) once the study has a completed trial and a running one, else None."""
    try:
        trials = optuna.load_study(study_name="mlp", storage=url).get_trials()
    except KeyError:
        return None
    snapshot = [(trial.number, trial.state, trial.value) for trial in trials]
    states = [state for _, state, _ in snapshot]
    return snapshot if COMPLETE in states and RUNNING in states else None


def _start_tune(tmp_path, *args):
    command = [sys.executable, "-m", "gpudl.cli", "tune", "mlp", "--storage", f"sqlite:///{tmp_path}/study.db",
               "--out", str(tmp_path), "--epochs", "3", "--limit", "3000", "--width", "64", "--sampler", "random",
               "--pruner", "none", "--param", "lr=log:1e-4:1e-2", "--heartbeat-interval", "1", *args]
    env = subprocess_env(GPUDL_BACKEND=os.environ.get("GPUDL_BACKEND", "numpy"))
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@needs_real_data
def test_a_killed_worker_loses_no_completed_trial(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    worker = _start_tune(tmp_path, "--trials", "30")
    snapshot = _wait_for(lambda: _states_once_running(url), worker)
    worker.kill()  # SIGKILL: no handler runs, the running trial stays RUNNING in the storage
    worker.communicate()
    completed = {number: value for number, state, value in snapshot if state == COMPLETE}
    after = {trial.number: trial for trial in _trials(tmp_path)}
    assert all(after[number].state == COMPLETE and after[number].value == value
               for number, value in completed.items())
    running = [number for number, trial in after.items() if trial.state == RUNNING]
    assert len(running) == 1
    time.sleep(2.5)  # past the grace period (twice the 1 s heartbeat interval)
    rerun = _start_tune(tmp_path, "--trials", "1")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    final = {trial.number: trial for trial in _trials(tmp_path)}
    assert final[running[0]].state == FAIL  # failed through the heartbeat, by the next worker
    assert sum(trial.state == COMPLETE for trial in final.values()) == sum(
        trial.state == COMPLETE for trial in after.values()) + 1


@needs_real_data
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_keeps_completed_trials_and_fails_the_running_one(tmp_path, workers):
    url = f"sqlite:///{tmp_path}/study.db"
    worker = _start_tune(tmp_path, "--trials", "30", "--workers", str(workers))
    snapshot = _wait_for(lambda: _states_once_running(url), worker)
    worker.send_signal(signal.SIGINT)  # to the main process only: it passes the interrupt on to its workers
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 130 and "interrupted" in err
    after = {trial.number: trial for trial in _trials(tmp_path)}
    assert all(after[number].state == COMPLETE for number, state, _ in snapshot if state == COMPLETE)
    assert RUNNING not in {trial.state for trial in after.values()} and FAIL in {trial.state for trial in after.values()}


# ----------------------------------------------------------------------------- the Python API
class _RecordingObjective:
    """A cheap picklable objective: reports the worker's thread setting and returns a function of x."""

    def __call__(self, trial):
        x = trial.suggest_float("x", -2.0, 2.0)
        trial.set_user_attr("threads", os.environ.get("OMP_NUM_THREADS"))
        trial.set_user_attr("pid", os.getpid())
        return -x * x


def test_optimize_with_worker_processes_divides_threads(tmp_path):
    study = tune.optimize(_RecordingObjective(), 5, study_name="api", storage=f"sqlite:///{tmp_path}/api.db",
                          sampler="random", workers=2, quiet=True)
    trials = study.get_trials()
    assert len(trials) == 5 and all(trial.state == COMPLETE for trial in trials)
    assert len({trial.user_attrs["pid"] for trial in trials}) == 2 and os.getpid() not in {
        trial.user_attrs["pid"] for trial in trials}
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert {trial.user_attrs["threads"] for trial in trials} == {str(max(1, cpus // 2))}


def test_optimize_resumes_a_journal_file_and_is_reproducible(tmp_path):
    path = str(tmp_path / "study.log")
    first = tune.optimize(_RecordingObjective(), 3, study_name="j", storage=path, sampler="tpe", seed=3, quiet=True)
    again = tune.optimize(_RecordingObjective(), 2, study_name="j", storage=path, sampler="tpe", seed=3, quiet=True)
    assert len(again.trials) == 5 and len({trial.params["x"] for trial in again.trials}) == 5
    twin = tune.optimize(_RecordingObjective(), 3, study_name="j", sampler="tpe", seed=3, quiet=True)  # in memory
    assert [trial.params for trial in twin.trials] == [trial.params for trial in first.trials[:3]]


def test_epoch_reporter_prunes_but_never_after_the_last_epoch():
    class Trial:
        def __init__(self):
            self.reported = []

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return True

    trial = Trial()
    reporter = tune.epoch_reporter(trial, epochs=3)
    with pytest.raises(optuna.TrialPruned, match="after epoch 1 of 3"):
        reporter(0, {"val_acc": [0.5]})
    reporter(2, {"val_acc": [0.5, 0.6, 0.7]})  # the last epoch: reported, never pruned
    assert trial.reported == [(1, 0.5), (3, 0.7)]


@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_pruners_stop_poor_trials_early_in_a_real_study(pruner):
    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        history = {"val_acc": []}
        reporter = tune.epoch_reporter(trial, epochs=4)
        for epoch in range(4):
            history["val_acc"].append(x * (epoch + 1) / 4)
            reporter(epoch, history)
        return max(history["val_acc"])

    study = tune.optimize(objective, 30, sampler="random", pruner=pruner, seed=0, quiet=True)
    pruned = study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    assert pruned and all(trial.last_step < 4 for trial in pruned)
    assert all(len(trial.intermediate_values) == 4 for trial in study.get_trials(states=(COMPLETE,)))
    none = tune.optimize(objective, 10, sampler="random", pruner="none", seed=0, quiet=True)
    assert all(trial.state == COMPLETE for trial in none.trials)


def test_api_tunes_a_users_own_model_with_fit():
    x, t = spiral(n_per_class=40, n_classes=3, seed=0)
    train, val = random_split(TensorDataset(x, t), [0.75, 0.25], seed=0)

    def objective(trial):
        params = tune.suggest(trial, {"lr": "log:1e-3:1e-1", "width": "int:4:32"})
        gpudl.manual_seed(0)
        model = nn.Sequential(nn.Linear(2, params["width"]), nn.ReLU(), nn.Linear(params["width"], 3))
        optimizer = optim.Adam(model.parameters(), lr=params["lr"])
        history = fit(model, nn.functional.softmax_cross_entropy, optimizer, DataLoader(train, 16, shuffle=True),
                      DataLoader(val, 64), epochs=3, progress=False, on_epoch_end=tune.epoch_reporter(trial, 3))
        return max(history["val_acc"])

    study = tune.optimize(objective, 4, study_name="spiral", sampler="random", seed=0, quiet=True)
    assert isinstance(study, optuna.Study) and len(study.trials) == 4
    assert 0.0 < study.best_value <= 1.0 and 4 <= study.best_params["width"] <= 32


@pytest.mark.parametrize("kwargs, message", [({"sampler": "bayes"}, "unknown sampler"),
                                             ({"pruner": "asha"}, "unknown pruner"),
                                             ({"sampler": "grid"}, "needs grid="),
                                             ({"workers": 2}, "storage URL")])
def test_optimize_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tune.optimize(_RecordingObjective(), 1, **kwargs)


# ----------------------------------------------------------------------------- the train options it searches
def test_width_sets_each_models_size_and_momentum_reaches_the_optimizer():
    assert models.build("mlp", width=8)[1].weight.shape == (8, 784)
    assert models.build("cnn", width=4)[3].weight.shape == (8, 4, 3, 3)
    assert models.build("lstm", width=16).fc.weight.shape == (10, 16)
    from gpudl.commands.train import _make_optimizer
    optimizer = _make_optimizer("momentum", models.build("mlp", width=8).parameters(), 0.1, 0.0, 0.5)
    assert optimizer.param_groups[0]["momentum"] == 0.5


def test_a_grid_worker_stops_when_other_processes_took_the_trial_numbers_of_its_points():
    runs = []

    def objective(trial):
        lr = trial.suggest_categorical("lr", [0.1, 0.2])
        if not runs:  # meanwhile another process creates a trial, taking the number meant for point 2
            trial.study.ask()
        runs.append(lr)
        return lr

    storage = optuna.storages.InMemoryStorage()
    study = tune.optimize(objective, sampler="grid", grid={"lr": [0.1, 0.2]}, storage=storage, quiet=True)
    states = [trial.state for trial in study.trials]
    assert states == [COMPLETE, RUNNING, optuna.trial.TrialState.PRUNED] and runs == [0.1]
    assert study.trials[2].params == {}
    study.tell(1, state=FAIL)
    rerun = tune.optimize(objective, sampler="grid", grid={"lr": [0.1, 0.2]}, storage=storage, quiet=True)
    assert [trial.params for trial in rerun.trials[3:]] == [{"lr": 0.2}] and runs == [0.1, 0.2]


def test_every_model_has_a_default_space_that_parses(tmp_path, capsys):
    from gpudl.commands.tune import DEFAULT_SPACES
    assert set(DEFAULT_SPACES) == set(models.MODELS)
    for model, space in DEFAULT_SPACES.items():  # --trials 0: parse and open the study, train nothing
        assert main(["tune", model, "--trials", "0", "--out", str(tmp_path), "--study", model]) == 0
        assert "searching " + " ".join(f"{name}={spec}" for name, spec in space.items()) in capsys.readouterr().out
