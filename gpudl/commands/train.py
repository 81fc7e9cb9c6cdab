"""``gpudl train {mlp,cnn,lstm}``: train a model on Fashion-MNIST and report test accuracy."""
import argparse
import json
import os
from pathlib import Path

from .. import backend as _backend
from . import CommandError

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


def add_parser(commands):
    """Register the sub-command and its options."""
    parser = commands.add_parser("train", help="train mlp, cnn or lstm on Fashion-MNIST",
                                 description="Train a model on Fashion-MNIST: a seeded validation split is held "
                                             "out of the training set; the test split is evaluated once, at the end.")
    parser.add_argument("model", choices=("mlp", "cnn", "lstm"))
    add_training_options(parser)
    parser.add_argument("--out", default=None, help="output folder (default: runs/<model>)")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                        help="continue from a checkpoint (default: <out>/checkpoint.npz)")
    parser.add_argument("--plot", action="store_true", help="write curves.png (needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def add_training_options(parser):
    """The options that define a training run (model size, optimisation, data), shared with ``gpudl tune``."""
    from ..models import WIDTHS
    parser.add_argument("--epochs", type=_positive_int, default=3)
    parser.add_argument("--batch-size", type=_positive_int, default=128)
    parser.add_argument("--lr", type=_positive_float, default=1e-3)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    parser.add_argument("--momentum", type=_fraction, default=0.9, help="momentum of --optimizer momentum")
    parser.add_argument("--weight-decay", type=_number(float, 0.0), default=0.0)
    parser.add_argument("--dropout", type=_fraction, default=0.0)
    parser.add_argument("--width", type=_positive_int, default=None,
                        help="model size: " + "; ".join(f"{name}: {what} (default {default})"
                                                        for name, (default, what, _) in WIDTHS.items()))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=_backend.VALID_BACKENDS, default=None,
                        help="overrides GPUDL_BACKEND for this run")
    parser.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files "
                                                     "(default: $GPUDL_DATA, else /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--limit", type=_positive_int, default=None,
                        help="use only the first N training and test examples (quick runs)")
    parser.add_argument("--val-fraction", type=_fraction, default=0.1)


def _select_backend(name):
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
    from ..data import DataLoader, FashionMNIST, random_split
    from ..train import evaluate, fit
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CommandError("--plot needs matplotlib: pip install 'gpudl[plot]'") from None
    _select_backend(args.backend)
    out = Path(args.out or Path("runs") / args.model)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.npz"
    resume = None if args.resume is None else Path(args.resume or checkpoint)
    if resume is not None and not resume.is_file():
        raise CommandError(f"--resume: no checkpoint at {resume}")

    gpudl.manual_seed(args.seed)
    layout = {"flatten": args.model == "mlp", "sequence": args.model == "lstm"}
    train_set = FashionMNIST(root=args.data, split="train", limit=args.limit, **layout)
    test_set = FashionMNIST(root=args.data, split="test", limit=args.limit, **layout)
    n_val = round(len(train_set) * args.val_fraction)
    train_part, val_part = random_split(train_set, [len(train_set) - n_val, n_val], seed=args.seed)
    train_loader = DataLoader(train_part, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    val_loader = DataLoader(val_part, batch_size=1024) if n_val else None
    test_loader = DataLoader(test_set, batch_size=1024)

    model = models.build(args.model, dropout=args.dropout, width=args.width)
    optimizer = _make_optimizer(args.optimizer, model.parameters(), args.lr, args.weight_decay, args.momentum)
    loss_fn = nn.functional.softmax_cross_entropy
    print(f"gpudl train {args.model}: {len(train_part)} training, {n_val} validation, {len(test_set)} test examples; "
          f"device {_backend.default_device()}; {args.optimizer} lr {args.lr}, batch {args.batch_size}", flush=True)

    def report(epoch, history):
        line = (f"epoch {epoch + 1}/{args.epochs}: train loss {history['train_loss'][-1]:.4f} "
                f"acc {100 * history['train_acc'][-1]:.2f}%")
        if history["val_loss"]:
            line += f", val loss {history['val_loss'][-1]:.4f} acc {100 * history['val_acc'][-1]:.2f}%"
        line += f", {history['epoch_seconds'][-1]:.1f} s ({history['samples_per_s'][-1]:.0f} samples/s)"
        print(line, flush=True)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)

    history = fit(model, loss_fn, optimizer, train_loader, val_loader, epochs=args.epochs, seed=args.seed,
                  checkpoint=checkpoint, resume=resume, progress=not args.no_progress, on_epoch_end=report)
    if test:
        history["test_loss"], history["test_acc"] = evaluate(model, loss_fn, test_loader)
    _write_json(out / "history.json", history)
    if args.plot:
        from ..plotting import plot_history
        plot_history(history, out / "curves.png", title=f"gpudl {args.model} on Fashion-MNIST")
    if test:
        print(f"test accuracy: {100 * history['test_acc']:.2f}%")
    print(f"wrote {out / 'history.json'} and {checkpoint}" + (f" and {out / 'curves.png'}" if args.plot else ""))
    return 0
