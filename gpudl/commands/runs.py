"""How a ``gpudl train`` run starts: the folder it writes, the checkpoint or weights it starts from, what it freezes.

Without ``--out`` every run gets a new folder ``runs/<model>/1``, ``runs/<model>/2``, ..., so no run
overwrites another; ``--resume`` alone continues the newest. An ``--out`` folder that already holds a
run is refused unless ``--resume`` continues it. A checkpoint records the run's settings, so that
``--resume`` can say what changed, and refuse a checkpoint of another model or optimizer.
"""
from pathlib import Path

from . import CommandError

CHECKPOINT = "checkpoint.npz"
RUN_FILES = (CHECKPOINT, "history.json")
# Options that say how this invocation runs rather than what is trained: not recorded, not compared.
_NOT_SETTINGS = {"command", "run", "resume", "out", "plot", "no_progress", "init_from", "nproc"}
# Settings a checkpoint cannot be continued under other values of: its weights or optimizer state would not fit.
_IDENTITY = ("model", "optimizer", "freeze")


def _flag(key):
    return "--" + key.replace("_", "-")


def _numbered_runs(root: Path):
    """``(N, folder)`` for each run folder ``root/N``, in increasing N."""
    if not root.is_dir():
        return []
    return sorted((int(folder.name), folder) for folder in root.iterdir() if folder.is_dir() and folder.name.isdigit())


def new_run_folder(root: Path) -> Path:
    """Create and return ``root/N`` for the next number N (1, 2, ...). ``mkdir`` claims the number, so two
    runs started at the same time get different folders."""
    runs = _numbered_runs(root)
    number = runs[-1][0] + 1 if runs else 1
    while True:
        folder = root / str(number)
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            number += 1


def plan_folders(model: str, out, resume):
    """``(out, checkpoint)`` from ``--out`` and ``--resume``: the folder to write (None: a new numbered run
    folder under ``runs/<model>``, created by the caller with ``new_run_folder``) and the checkpoint to resume
    (None for a new run). Raises CommandError, naming the flag, when there is nothing to resume or ``--out``
    already holds a run that this command would overwrite."""
    root = Path("runs") / model
    if resume is None:
        if out is None:
            return None, None
        out = Path(out)
        existing = [name for name in RUN_FILES if (out / name).exists()]
        if existing:
            raise CommandError(f"--out {out} already holds a run ({', '.join(existing)}): pass --resume to continue "
                               f"it, or choose another --out (without --out each run gets a new folder {root}/N)")
        return out, None
    if resume:
        checkpoint = Path(resume)
        out = Path(out) if out is not None else checkpoint.parent
    elif out is not None:
        out = Path(out)
        checkpoint = out / CHECKPOINT
    else:
        runs = _numbered_runs(root)
        if not runs:
            raise CommandError(f"--resume: no run of {model} to resume in {root}/ (runs are numbered {root}/1, "
                               f"{root}/2, ...); pass --resume CHECKPOINT")
        out = runs[-1][1]
        checkpoint = out / CHECKPOINT
    if not checkpoint.is_file():
        raise CommandError(f"--resume: no checkpoint at {checkpoint}")
    return out, checkpoint


def settings(args) -> dict:
    """The options of this run that a checkpoint records (model, optimizer, lr, epochs, ...): the plain values."""
    return {key: value for key, value in sorted(vars(args).items())
            if key not in _NOT_SETTINGS and isinstance(value, (str, int, float, list, type(None)))}


def _identity(recorded):
    frozen = recorded.get("freeze") or []
    return (f"{recorded.get('model')} with {recorded.get('optimizer')}"
            + (f" (--freeze {' '.join(frozen)})" if frozen else ""))


def _same(a, b):
    """Equal as settings: None and an empty list both mean "not given"; the order of list items does not count."""
    a, b = (sorted(v) if isinstance(v, (list, tuple)) else v for v in (a, b))
    return (a or None) == (b or None)


def changes(recorded, current, checkpoint) -> str:
    """The settings that differ between the run of ``checkpoint`` (``recorded``) and this one, as
    ``--lr 0.001 -> 0.01, ...`` ('' if none). A different model, optimizer or set of frozen parameters is a
    CommandError naming both."""
    if not all(_same(recorded.get(key), current.get(key)) for key in _IDENTITY):
        raise CommandError(f"--resume: {checkpoint} is a run of {_identity(recorded)}; this run asks for "
                           f"{_identity(current)}: resume with the same model, --optimizer and --freeze, or start a "
                           "new run")
    # Options this gpudl has and the checkpoint's did not (or the reverse) cannot be compared.
    keys = [key for key in sorted(set(recorded) & set(current)) if key not in _IDENTITY]
    return ", ".join(f"{_flag(key)} {recorded[key]} -> {current[key]}" for key in keys if recorded[key] != current[key])


def start_model(args, model, state, checkpoint) -> list:
    """Put into ``model`` what this run starts from and freeze ``--freeze``: the weights of ``state`` (the
    loaded ``checkpoint``) when resuming, else those of ``--init-from``, else its fresh initialisation.
    Returns the lines that tell the user where the run resumes, what changed and what is frozen."""
    from ..finetune import freeze, load_weights, trainable_parameters, weight_mismatches
    notes = []
    if state is not None:
        recorded = state.get("config")
        changed = changes(recorded, settings(args), checkpoint) if recorded is not None else None
        problems = weight_mismatches(model, state["model"])
        if problems:
            raise CommandError(f"--resume: {checkpoint} does not fit this {args.model} model: {problems}")
        said = ("the checkpoint records no settings, so what changed is unknown" if changed is None
                else f"changed: {changed}" if changed else "no setting changed")
        done = state["epoch"]
        if done >= args.epochs:
            notes.append(f"nothing left to train: {checkpoint} has done {done} of --epochs {args.epochs} ({said}); "
                         f"pass --epochs {done + 1} or more to train on. Evaluating it; nothing is written")
        else:
            notes.append(f"resuming from epoch {done + 1} of {args.epochs} ({checkpoint}, {done} done); {said}")
        if args.init_from:
            notes.append(f"--init-from {args.init_from} not used: the weights come from the checkpoint resumed")
    elif args.init_from:
        try:
            load_weights(model, args.init_from)
        except ValueError as exc:
            raise CommandError(f"--init-from: {exc}") from None
        notes.append(f"initialised from {args.init_from}")
    if args.freeze:
        try:
            frozen = freeze(model, args.freeze)
        except ValueError as exc:
            raise CommandError(f"--freeze: {exc}") from None
        trained = sum(p.numel() for p in trainable_parameters(model))
        if not trained:
            raise CommandError(f"--freeze {' '.join(args.freeze)} freezes every parameter: nothing would train")
        notes.append(f"frozen: {', '.join(frozen)}; {trained:,} of "
                     f"{sum(p.numel() for p in model.parameters()):,} weights train")
    return notes
