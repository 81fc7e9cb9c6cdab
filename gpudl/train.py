"""The training loop: ``fit`` trains a model for some epochs with progress, validation,
early stopping and a checkpoint per epoch from which a killed run resumes exactly."""
import sys
import time

from . import backend as _backend
from .autograd.grad_mode import no_grad
from .serialization import load, save

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")


def _dropout_seed(seed: int, epoch: int) -> int:
    """The dropout stream of ``epoch``: a function of (seed, epoch) only, so resuming repeats it."""
    return (seed << 32) + epoch


def _batch_stats(logits, targets, loss):
    """Summed loss and correct predictions of one batch, as device tensors (no host sync)."""
    return loss.detach() * targets.shape[0], (logits.argmax(axis=1) == targets).sum()


def evaluate(model, loss_fn, loader, parallel=None):
    """Mean loss and accuracy of ``model`` over ``loader``, in eval mode and without a graph (with
    ``parallel``, a ``gpudl.distributed.training.DataParallelRun``: over every rank's loader)."""
    was_training = model.training
    model.eval()
    total_loss = total_correct = 0
    count = 0
    with no_grad():
        for x, t in loader:
            logits = model(x)
            loss_sum, correct = _batch_stats(logits, t, loss_fn(logits, t))
            total_loss = total_loss + loss_sum
            total_correct = total_correct + correct
            count += t.shape[0]
    model.train(was_training)
    if parallel is not None:
        total_loss, total_correct, count = parallel.sum_over_ranks(float(total_loss), float(total_correct), count)
    if count == 0:
        raise ValueError("evaluate: the loader yielded no batches")
    return float(total_loss) / count, float(total_correct) / count


class _Progress:
    """Progress over one epoch's batches on stderr: a tqdm bar on a terminal; elsewhere (a pipe, a
    log file) a plain line at each tenth of the epoch, since a bar's carriage returns garble files."""

    def __init__(self, enabled, total, description):
        self.bar = None
        self.lines = enabled and not sys.stderr.isatty()
        self.total, self.description, self.done, self.tenths = total, description, 0, 0
        if enabled and not self.lines:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=description, unit="batch", leave=False, dynamic_ncols=True)

    def update(self, steps, **postfix):
        self.done += steps
        if self.bar is not None:
            self.bar.update(steps)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
        elif self.lines and self.total and 10 * self.done // self.total > self.tenths:
            self.tenths = 10 * self.done // self.total
            details = "".join(f", {key.replace('_per_', '/')} {value}" for key, value in postfix.items())
            print(f"{self.description}: {self.done}/{self.total} batches{details}", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _new_history():
    return {key: [] for key in (*METRICS, "epoch_seconds", "samples_per_s")}


def fit(model, loss_fn, optimizer, train_loader, val_loader=None, epochs=1, scheduler=None, *, seed=0,
        checkpoint=None, resume=None, early_stopping_patience=None, log_interval=50, progress=True,
        on_epoch_end=None, config=None, parallel=None):
    """Train ``model`` for ``epochs`` epochs and return the history (a dict of per-epoch lists).

    Each step runs forward, ``loss_fn(logits, targets)``, backward and ``optimizer.step()``. The
    running loss and accuracy stay on the device and are read once per ``log_interval`` steps
    (the only host syncs, which also surface device-side index errors). After each epoch: the
    validation loss/accuracy (``no_grad`` + ``eval()``), ``scheduler.step()``, and — if
    ``checkpoint`` is a path — an atomic checkpoint of model, optimizer, scheduler, epoch and
    history (and ``config``, the run's settings, if given). ``resume`` (a checkpoint path, or such a
    checkpoint already loaded with ``gpudl.load``) continues such a run; data order and dropout masks
    derive from (seed, epoch), so the resumed run ends with the same history as an uninterrupted
    one. ``early_stopping_patience`` stops after that many epochs without a lower validation loss.
    ``on_epoch_end(epoch, history)`` is called after each epoch (e.g. to print a line).
    ``parallel`` (a ``gpudl.distributed.training.DataParallelRun``) trains ``model`` (wrapped in
    DistributedDataParallel) as one rank of several: each loader yields this rank's share, losses are
    weighted so that the averaged gradient is the whole batch's, metrics are summed over the ranks,
    and only rank 0 writes the checkpoint (of the wrapped model, so any number of ranks can resume it).
    """
    if early_stopping_patience is not None and val_loader is None:
        raise ValueError("fit: early stopping needs a val_loader")
    history, start_epoch, best, stale = _new_history(), 0, float("inf"), 0
    plain = model if parallel is None else model.module
    if resume is not None:
        state = resume if isinstance(resume, dict) else load(resume)
        plain.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        history, start_epoch = state["history"], state["epoch"]
        best, stale = state["best_val_loss"], state["epochs_without_improvement"]
    device = _backend.default_device() if train_loader.device is None else train_loader.device
    fused = _backend.backend_for(device).fused
    for epoch in range(start_epoch, epochs):
        if early_stopping_patience is not None and stale >= early_stopping_patience:
            break
        started = time.perf_counter()
        train_loss, train_acc, seen = _train_epoch(model, loss_fn, optimizer, train_loader, epoch, epochs, seed,
                                                   log_interval, progress, fused, parallel)
        seconds = time.perf_counter() - started
        history["train_loss"].append(train_loss)
        history["train_acc"].append(train_acc)
        if val_loader is not None:
            val_loss, val_acc = evaluate(model, loss_fn, val_loader, parallel)
            history["val_loss"].append(val_loss)
            history["val_acc"].append(val_acc)
            if val_loss < best:
                best, stale = val_loss, 0
            else:
                stale += 1
        history["epoch_seconds"].append(seconds)
        history["samples_per_s"].append(seen / seconds)
        if scheduler is not None:
            scheduler.step()
        if checkpoint is not None and (parallel is None or parallel.is_writer):
            save({"model": plain.state_dict(), "optimizer": optimizer.state_dict(),
                  "scheduler": None if scheduler is None else scheduler.state_dict(), "epoch": epoch + 1,
                  "history": history, "best_val_loss": best, "epochs_without_improvement": stale,
                  "config": config}, checkpoint)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    return history


def _train_epoch(model, loss_fn, optimizer, loader, epoch, epochs, seed, log_interval, progress, fused, parallel):
    model.train()
    loader.set_epoch(epoch)
    # ranks draw disjoint mask streams: the same masks on every rank would repeat across the batch's shards
    _backend.seed_dropout(_dropout_seed(seed, epoch), 0 if parallel is None else parallel.rank << 48)
    bar = _Progress(progress, len(loader), f"epoch {epoch + 1}/{epochs}")
    total_loss = total_correct = 0
    seen = logged_steps = 0
    started = time.perf_counter()
    for step, (x, t) in enumerate(loader, 1):
        logits = model(x)
        loss = loss_fn(logits, t)
        count, weight = (t.shape[0], 1.0) if parallel is None else parallel.step_share(step)
        optimizer.zero_grad()
        (loss if weight == 1.0 else loss * weight).backward()
        optimizer.step()
        if count:  # 0: a placeholder example on a rank that has no share of a short last batch
            with no_grad():
                loss_sum, correct = _batch_stats(logits, t, loss)
                total_loss = total_loss + loss_sum
                total_correct = total_correct + correct
        seen += count
        if step % log_interval == 0:
            fused.raise_pending_device_errors()
            bar.update(step - logged_steps, loss=f"{float(total_loss) / seen:.4f}",
                       acc=f"{float(total_correct) / seen:.4f}",
                       samples_per_s=f"{seen / (time.perf_counter() - started):.0f}")
            logged_steps = step
    fused.raise_pending_device_errors()
    bar.close()
    if parallel is not None:
        total_loss, total_correct, seen = parallel.sum_over_ranks(float(total_loss), float(total_correct), seen)
        seen = int(seen)
    if seen == 0:
        raise ValueError("fit: the training loader yielded no batches")
    return float(total_loss) / seen, float(total_correct) / seen, seen
