"""``gpudl tune MODEL``: search ``gpudl train`` options with Optuna (grid, random or TPE); every trial is a
``gpudl train`` command whose best validation accuracy is the objective."""
import argparse
import json
import shlex
import shutil
from contextlib import redirect_stdout
from pathlib import Path

from . import CommandError
from . import train as train_command

# the train options a --param may search, and the kind of value each takes
TUNABLE = {"lr": float, "batch_size": int, "weight_decay": float, "dropout": float, "optimizer": str,
           "momentum": float, "width": int}
DEFAULT_SPACES = {
    "mlp": {"lr": "log:1e-4:1e-2", "batch_size": "32,64,128,256", "weight_decay": "log:1e-6:1e-3",
            "dropout": "0:0.5", "width": "log:64:1024"},
    "cnn": {"lr": "log:1e-4:1e-2", "batch_size": "32,64,128", "dropout": "0:0.5", "width": "log:8:64"},
    "lstm": {"lr": "log:1e-4:1e-2", "batch_size": "32,64,128", "dropout": "0:0.5", "width": "log:32:256"},
    # the embedding size must divide among the 4 attention heads
    "transformer": {"lr": "log:1e-4:1e-2", "batch_size": "32,64,128", "dropout": "0:0.3", "width": "32,64,96,128"},
}
DEFAULT_TRIALS = 20


def add_parser(commands):
    """Register the sub-command and its options."""
    spaces = "; ".join(f"{model}: " + " ".join(f"{name}={spec}" for name, spec in space.items())
                       for model, space in DEFAULT_SPACES.items())
    parser = commands.add_parser(
        "tune", help="search train options with Optuna (grid, random, TPE)",
        description="Search gpudl train options with Optuna. Each trial is a gpudl train command (the train "
                    "options below are fixed for every trial unless searched); its objective is its best "
                    "validation accuracy (the test split is never used). Re-running the same command resumes "
                    "the study and adds --trials more.",
        epilog=f"Default search spaces: {spaces}. Trial files go to OUT/STUDY/trial-N (train.log, history.json, "
               f"checkpoint.npz); trials.csv and the plots (history.png, importances.png, "
               f"parallel_coordinate.png) to OUT/STUDY.")
    parser.add_argument("model", choices=tuple(DEFAULT_SPACES))
    train_command.add_training_options(parser)
    parser.add_argument("--param", action="append", default=[], metavar="NAME=SPEC",
                        help=f"search NAME (one of {', '.join(TUNABLE)}) over SPEC: log:LO:HI (log-uniform), "
                             f"LO:HI (uniform float), int:LO:HI (uniform integer) or a,b,c (a choice; the grid's "
                             f"values); repeatable; default: the model's default space (below)")
    parser.add_argument("--sampler", choices=("tpe", "random", "grid"), default="tpe",
                        help="tpe: Bayesian optimisation (default); seeded from --seed, the worker's index and the "
                             "number of trials already in the study")
    parser.add_argument("--trials", type=train_command._number(int, 0), default=None,
                        help=f"trials to add in this run, all workers together (default {DEFAULT_TRIALS}; for the "
                             f"grid: its points that no trial covers yet, each run once)")
    parser.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median",
                        help="stops unpromising trials early from each epoch's validation accuracy (never after "
                             "the last epoch); default median, with Optuna's defaults")
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="an Optuna storage URL (sqlite:///PATH.db, postgresql://..., mysql://...), or a journal "
                             "file named by a path ending in .log (e.g. runs/study.log; no heartbeat there); "
                             "default: sqlite:///OUT/study.db. Machines sharing one URL work on one study")
    parser.add_argument("--study", default=None, help="study name (default: the model's name)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/tune-<model>)")
    parser.add_argument("--workers", type=train_command._positive_int, default=1,
                        help="local worker processes on the storage, the CPU threads divided among them")
    parser.add_argument("--heartbeat-interval", type=train_command._positive_int, default=60, metavar="SECONDS",
                        help="a running trial records a heartbeat this often (database storages)")
    parser.add_argument("--grace-period", type=train_command._positive_int, default=None, metavar="SECONDS",
                        help="a running trial without a heartbeat for this long (default: twice the interval) "
                             "belongs to a dead worker and is failed when a worker starts a trial")
    parser.add_argument("--top", type=train_command._positive_int, default=5, help="rows of the best-trials table")
    parser.add_argument("--retrain", action="store_true",
                        help="then train the best configuration into OUT/STUDY/best-trial-N and report its test "
                             "accuracy")
    parser.add_argument("--show", action="store_true", help="print the stored study and run nothing")
    parser.set_defaults(run=run, usage_error=parser.error)


def _option(name):
    return "--" + name.replace("_", "-")


def _argument(value):
    return repr(value) if isinstance(value, float) else str(value)


def _training_defaults():
    parser = argparse.ArgumentParser(add_help=False)
    train_command.add_training_options(parser)
    return vars(parser.parse_args([])), parser


def _converter(parser, name):
    """The train option's own check of one value (its type and range), raising ValueError."""
    def convert(text):
        try:
            return getattr(parser.parse_args([f"{_option(name)}={text}"]), name)
        except argparse.ArgumentError as exc:
            raise ValueError(str(exc).split(": ", 1)[-1]) from None
    return convert


def _space(args, tune):
    """The searched parameters: ``--param`` specs (checked by the train options' own types), else the
    model's default space. Bad input is a usage error (exit 2)."""
    _, parser = _training_defaults()
    parser.exit_on_error = False
    given = {}
    for text in args.param or [f"{name}={spec}" for name, spec in DEFAULT_SPACES[args.model].items()]:
        name, equals, spec = text.partition("=")
        name = name.strip().replace("-", "_")
        if not equals:
            args.usage_error(f"--param {text}: expected NAME=SPEC; accepted forms of SPEC: {tune.FORMS}")
        if name not in TUNABLE:
            args.usage_error(f"--param {text}: unknown parameter {name!r}; valid: {', '.join(TUNABLE)}")
        if name in given:
            args.usage_error(f"--param {name} is given twice")
        try:
            given[name] = tune.parse_param(name, spec, _converter(parser, name), integer=TUNABLE[name] is int)
        except ValueError as exc:
            args.usage_error(str(exc))
    return given


def _fixed_argv(args, space):
    """The train options of this run that are not searched: those that differ from train's defaults, and
    always the epochs and the seed, so that a trial's command reproduces it whatever the defaults become."""
    defaults, _ = _training_defaults()
    argv = []
    for name, default in defaults.items():
        value = getattr(args, name)
        if name not in space and (value != default or name in ("epochs", "seed")):
            argv += [_option(name), *(_argument(item) for item in (value if isinstance(value, list) else [value]))]
    return argv


def _fresh_folder(folder):
    """``folder``, empty: files there are left by an earlier attempt at the same trial number or retraining
    (a study of this name whose storage is gone, a killed retraining), which gpudl train would refuse to
    overwrite."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


class TrainObjective:
    """One trial: draw the parameters, run ``gpudl train`` with them (output to the trial folder's
    train.log, no test split), report each epoch's validation accuracy to the pruner and return the
    best. Picklable, so worker processes can carry it."""

    def __init__(self, model, fixed_argv, space, folder, epochs):
        self.model, self.fixed_argv, self.space = model, fixed_argv, space
        self.folder, self.epochs = Path(folder), epochs

    def __call__(self, trial):
        from .. import tune
        from ..cli import build_parser
        params = {name: spec.suggest(trial) for name, spec in self.space.items()}
        argv = ["train", self.model, *self.fixed_argv]
        argv += [item for name, value in params.items() for item in (_option(name), _argument(value))]
        trial.set_user_attr("command", "gpudl " + shlex.join(argv))
        folder = _fresh_folder(self.folder / f"trial-{trial.number}")
        args = build_parser().parse_args(argv + ["--out", str(folder), "--no-progress"])
        reporter = tune.epoch_reporter(trial, self.epochs)
        histories = []

        def on_epoch_end(epoch, history):
            histories[:] = [history]
            reporter(epoch, history)

        with open(folder / "train.log", "w") as log, redirect_stdout(log):
            args.run(args, on_epoch_end=on_epoch_end, test=False)
        return max(histories[0]["val_acc"])


def _retrain(study, tune, folder):
    """Train the best trial's command into ``folder/best-trial-N`` and report its test accuracy (once: a
    configuration retrained before is reported from its history)."""
    from ..cli import build_parser
    best = tune.best_trials(study, 1)
    if not best:
        raise CommandError("--retrain: the study has no completed trial")
    command = best[0].user_attrs.get("command")
    if command is None:
        raise CommandError(f"--retrain: trial {best[0].number} stored no gpudl train command")
    folder = folder / f"best-trial-{best[0].number}"
    history = folder / "history.json"
    if history.is_file() and "test_acc" in json.loads(history.read_text()):
        print(f"trial {best[0].number} was retrained before, in {folder}", flush=True)
    else:
        print(f"retraining trial {best[0].number} in {folder}: {command}", flush=True)
        args = build_parser().parse_args(shlex.split(command)[1:] + ["--out", str(_fresh_folder(folder))])
        args.run(args)
    test_acc = json.loads(history.read_text())["test_acc"]
    print(f"best trial {best[0].number}: validation accuracy {100 * best[0].value:.2f}% in the search, "
          f"test accuracy {100 * test_acc:.2f}% retrained")


def run(args) -> int:
    """Run (or, with --show, print) the study; then the summary, trials.csv, the plots and --retrain."""
    try:
        from .. import tune
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    out = Path(args.out or Path("runs") / f"tune-{args.model}")
    study_name = args.study or args.model
    storage = args.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    printer = tune.TrialPrinter("val acc", percent=True)
    folder = out / study_name
    if args.show:
        try:
            study = tune.load_study(study_name, storage)
        except tune.StorageError as exc:
            raise CommandError(str(exc)) from None
        print("\n".join(tune.summary(study, printer, args.top)))
        return 0
    space = _space(args, tune)
    grid = None
    if args.sampler == "grid":
        try:
            grid = tune.grid_of(space)
        except ValueError as exc:
            args.usage_error(str(exc))
    if args.val_fraction == 0:
        args.usage_error("gpudl tune chooses by validation accuracy: --val-fraction must be above 0")
    out.mkdir(parents=True, exist_ok=True)
    trials = DEFAULT_TRIALS if args.trials is None and grid is None else args.trials
    print(f"gpudl tune {args.model}: study {study_name!r} in {storage}; {args.sampler} sampler, {args.pruner} "
          f"pruner, {'the grid' if trials is None else trials} trials on {args.workers} worker(s); searching "
          + " ".join(f"{name}={spec.text}" for name, spec in space.items()), flush=True)
    objective = TrainObjective(args.model, _fixed_argv(args, space), space, folder, args.epochs)
    try:
        study = tune.optimize(objective, trials, study_name=study_name, storage=storage, sampler=args.sampler,
                              pruner=args.pruner, seed=args.seed, workers=args.workers, grid=grid,
                              heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period,
                              callbacks=[printer], quiet=True)
    except (tune.StorageError, RuntimeError) as exc:
        raise CommandError(str(exc)) from None
    print("\n".join(tune.summary(study, printer, args.top)))
    folder.mkdir(parents=True, exist_ok=True)
    written = [tune.write_trials_csv(study, folder / "trials.csv")]
    plots, skipped = tune.write_plots(study, folder)
    print("wrote " + ", ".join(str(path) for path in written + plots)
          + "".join(f"; skipped {name}: {reason}" for name, reason in skipped))
    if args.retrain:
        _retrain(study, tune, folder)
    return 0
