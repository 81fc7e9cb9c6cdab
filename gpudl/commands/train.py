"""``gpudl train {mlp,cnn,lstm,transformer}``: train a model on Fashion-MNIST and report test accuracy."""
import argparse
import json
import os
import sys
from pathlib import Path

from .. import backend as _backend
from . import CommandError, runs

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")


def _number(kind, low, high=None, low_inclusive=True):
    """An argparse type: a ``kind`` in [low, high) (or (low, high) without ``low_inclusive``)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        too_low = value < low if low_inclusive else value <= low
        if too_low or (high is not None and value >= high):
            bounds = f"{'[' if low_inclusive else '('}{low}, {'inf' if high is None else high})"
            raise argparse.ArgumentTypeError(f"must be in {bounds}, got {text}")
        return value
    return parse


_positive_int = _number(int, 0, low_inclusive=False)
_positive_float = _number(float, 0.0, low_inclusive=False)
_fraction = _number(float, 0.0, 1.0)
DEFAULT = " (default: %(default)s)"


def add_parser(commands):
    """Register the sub-command and its options."""
    parser = commands.add_parser("train", help="train mlp, cnn, lstm or transformer on Fashion-MNIST",
                                 description="Train a model on Fashion-MNIST: a seeded validation split is held "
                                             "out of the training set; the test split is evaluated once, at the end. "
                                             "Each run writes to a new folder runs/<model>/N unless --out is given.")
    parser.add_argument("model", choices=("mlp", "cnn", "lstm", "transformer"))
    add_training_options(parser)
    parser.add_argument("--out", default=None, help="output folder; refused if it holds a run, unless --resume "
                                                    "(default: a new folder runs/<model>/N)")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                        help="continue a run from its checkpoint (without CHECKPOINT: <out>/checkpoint.npz, or "
                             "the newest run in runs/<model>); says where it resumes and what changed")
    parser.add_argument("--plot", action="store_true", help="write curves.png (needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines (stderr)")
    parser.add_argument("--nproc", type=_positive_int, default=1,
                        help="data parallel over N processes started with mpiexec (gpudl[mpi]); --batch-size stays "
                             "the global batch" + DEFAULT)
    parser.set_defaults(run=run)
    _PARSERS["train"] = parser


_PARSERS = {}


def _rank_command_line(args):
    """The ``gpudl train`` arguments that repeat ``args`` in each rank of an ``--nproc`` launch."""
    line = ["train", args.model]
    for action in _PARSERS["train"]._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or action.dest in ("help", "nproc") or value == action.default:
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0 or value == action.const:  # a switch, or --resume without a path
            line.append(flag)
        else:
            line += [flag, *map(str, value if isinstance(value, list) else [value])]
    return line


def add_training_options(parser):
    """The options that define a training run (model size, optimisation, data), shared with ``gpudl tune``."""
    from ..models import WIDTHS
    parser.add_argument("--epochs", type=_positive_int, default=3,
                        help="epochs in all, with --resume those done included" + DEFAULT)
    parser.add_argument("--batch-size", type=_positive_int, default=128, help="training batch size" + DEFAULT)
    parser.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate" + DEFAULT)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="momentum: SGD with --momentum"
                                                                                + DEFAULT)
    parser.add_argument("--momentum", type=_fraction, default=0.9, help="momentum of --optimizer momentum" + DEFAULT)
    parser.add_argument("--weight-decay", type=_number(float, 0.0), default=0.0, help="L2 penalty" + DEFAULT)
    parser.add_argument("--dropout", type=_fraction, default=0.0, help="dropout probability" + DEFAULT)
    parser.add_argument("--width", type=_positive_int, default=None,
                        help="model size: " + "; ".join(f"{name}: {what} (default {default})"
                                                        for name, (default, what, _) in WIDTHS.items()))
    parser.add_argument("--seed", type=int, default=0, help="seeds weights, split, data order, dropout" + DEFAULT)
    parser.add_argument("--backend", choices=_backend.VALID_BACKENDS, default=None,
                        help="overrides GPUDL_BACKEND for this run (default: $GPUDL_BACKEND, else auto)")
    parser.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files "
                                                     "(default: $GPUDL_DATA, else /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--limit", type=_positive_int, default=None,
                        help="use only the first N training and test examples (quick runs)")
    parser.add_argument("--val-fraction", type=_fraction, default=0.1,
                        help="share of the training set held out for validation" + DEFAULT)
    parser.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                        help="start from the weights of a saved model (same parameter names and shapes)")
    parser.add_argument("--freeze", nargs="+", action="extend", default=None, metavar="PREFIX",
                        help="leave the parameters under these names untrained (the MLP's 1 3: 1.weight, 1.bias, "
                             "3.weight, 3.bias)")


def _select_backend(name):
    if name == "cupy":
        _backend.require_cupy("--backend cupy", cpu_choice="--backend numpy or auto")
    if name is not None:
        os.environ["GPUDL_BACKEND"] = name
        _backend.set_default_device("cpu" if _backend.resolve(name) == "numpy" else "cuda")


def _make_optimizer(name, parameters, lr, weight_decay, momentum):
    from .. import optim
    if name == "sgd":
        return optim.SGD(parameters, lr=lr, weight_decay=weight_decay)
    if name == "momentum":
        return optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    return optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


def _write_json(path: Path, value):
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=2))
    os.replace(temporary, path)


def run(args, *, on_epoch_end=None, test=True) -> int:
    """Train, evaluate on the test split, and write history.json, the checkpoint and the plot.

    ``on_epoch_end(epoch, history)`` is called after each epoch's line (``gpudl tune`` reports to
    Optuna there); ``test=False`` leaves the test split untouched."""
    import gpudl
    from .. import models, nn
    from ..data import DataError, DataLoader, FashionMNIST, random_split
    from ..data.mnist import ROOT_HINT
    from ..finetune import trainable_parameters
    from ..distributed.training import DataParallelRun, in_mpi_launch, launch
    from ..train import evaluate, fit
    if args.nproc > 1 and not in_mpi_launch():
        return launch(args.nproc, _rank_command_line(args))
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CommandError("--plot needs matplotlib: pip install 'gpudl[plot]'") from None
    _select_backend(args.backend)
    parallel = DataParallelRun(args.batch_size) if in_mpi_launch() else None
    if parallel is not None and args.nproc not in (1, parallel.size):
        raise CommandError(f"--nproc {args.nproc}, but the MPI launcher started {parallel.size} ranks")
    if parallel is not None and not parallel.is_writer:
        sys.stdout = open(os.devnull, "w")  # only rank 0 prints
    out, resume = runs.plan_folders(args.model, args.out, args.resume)
    state = None
    if resume is not None:
        try:
            state = gpudl.load(resume)
        except ValueError as exc:  # a CheckpointError: missing, corrupt or not a checkpoint
            raise CommandError(f"--resume: {exc}") from None

    gpudl.manual_seed(args.seed)
    layout = {"flatten": args.model == "mlp", "sequence": args.model == "lstm"}
    try:
        train_set = FashionMNIST(root=args.data, split="train", limit=args.limit, **layout)
        test_set = FashionMNIST(root=args.data, split="test", limit=args.limit, **layout)
    except DataError as exc:
        raise CommandError(str(exc).replace(ROOT_HINT, "pass --data FOLDER or set GPUDL_DATA")) from None
    n_val = round(len(train_set) * args.val_fraction)
    train_part, val_part = random_split(train_set, [len(train_set) - n_val, n_val], seed=args.seed)
    train_loader = DataLoader(train_part, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    val_loader = DataLoader(val_part, batch_size=1024) if n_val else None
    test_loader = DataLoader(test_set, batch_size=1024)
    if parallel is not None:
        train_loader = parallel.shard_train_loader(train_loader)
        val_loader = val_loader and DataLoader(parallel.shard_dataset(val_part), batch_size=1024)
        test_loader = DataLoader(parallel.shard_dataset(test_set), batch_size=1024)

    model = models.build(args.model, dropout=args.dropout, width=args.width)
    notes = runs.start_model(args, model, state, resume)
    optimizer = _make_optimizer(args.optimizer, trainable_parameters(model), args.lr, args.weight_decay,
                                args.momentum)
    if state is not None:  # the command line's hyperparameters win over the saved ones (the notes show changes)
        for saved, group in zip(state["optimizer"]["param_groups"], optimizer.param_groups):
            saved.update({key: value for key, value in group.items() if key != "params"})
    loss_fn = nn.functional.softmax_cross_entropy
    if parallel is not None and out is None:
        out = parallel.from_rank0(runs.new_run_folder, Path("runs") / args.model)
    out = out or runs.new_run_folder(Path("runs") / args.model)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / runs.CHECKPOINT
    print(f"gpudl train {args.model}: {len(train_part)} training, {n_val} validation, {len(test_set)} test examples; "
          f"device {_backend.default_device()}; {args.optimizer} lr {args.lr}, batch {args.batch_size}; run folder "
          f"{out}", flush=True)
    for note in notes:
        print(note, flush=True)
    if state is not None and state["epoch"] >= args.epochs:
        model.load_state_dict(state["model"])
        if test:
            print(f"test accuracy: {100 * evaluate(model, loss_fn, test_loader, parallel)[1]:.2f}%")
        return 0

    def report(epoch, history):
        line = (f"epoch {epoch + 1}/{args.epochs}: train loss {history['train_loss'][-1]:.4f} "
                f"acc {100 * history['train_acc'][-1]:.2f}%")
        if history["val_loss"]:
            line += f", val loss {history['val_loss'][-1]:.4f} acc {100 * history['val_acc'][-1]:.2f}%"
        line += f", {history['epoch_seconds'][-1]:.1f} s ({history['samples_per_s'][-1]:.0f} samples/s)"
        if parallel is not None:
            line += f", {parallel.size} ranks, gradient all-reduce {parallel.communication_per_step(history)}"
        print(line, flush=True)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)

    if parallel is not None:
        model = parallel.wrap(model)
    history = fit(model, loss_fn, optimizer, train_loader, val_loader, epochs=args.epochs, seed=args.seed,
                  checkpoint=checkpoint, resume=state, progress=not args.no_progress
                  and (parallel is None or parallel.is_writer), on_epoch_end=report, config=runs.settings(args),
                  parallel=parallel)
    if test:
        history["test_loss"], history["test_acc"] = evaluate(model, loss_fn, test_loader, parallel)
    if parallel is not None and not parallel.is_writer:
        return 0
    _write_json(out / "history.json", history)
    if args.plot:
        from ..plotting import plot_history
        plot_history(history, out / "curves.png", title=f"gpudl {args.model} on Fashion-MNIST")
    print(f"wrote {out / 'history.json'} and {checkpoint}" + (f" and {out / 'curves.png'}" if args.plot else ""))
    if test:  # the last line, for scripts that read it
        print(f"test accuracy: {100 * history['test_acc']:.2f}%")
    return 0
