"""Running a study on Optuna: storage, samplers and pruners by name, seeds per worker, local worker
processes sharing one storage, and an epoch reporter that feeds Optuna's pruners from ``fit``."""
import hashlib
import multiprocessing
import os
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import optuna

from ..benchmark import THREAD_VARIABLES
from .space import grid_points

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
# a trial holding one of these parameter sets, in these states, covers its grid point
_COVERING_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                    optuna.trial.TrialState.RUNNING)


class StorageError(ConnectionError):
    """A storage URL that cannot be opened (bad URL, missing driver, unreachable server or file)."""


def _quiet_experimental():
    """Heartbeats and the matplotlib plots are marked experimental in Optuna; gpudl relies on them knowingly."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_storage(url, heartbeat_interval=None, grace_period=None):
    """The Optuna storage behind ``url``: a path ending in ``.log`` is a journal file
    (``JournalFileBackend``); anything else is an SQLAlchemy URL for ``RDBStorage`` (``sqlite:///PATH``,
    ``postgresql://...``, ``mysql://...``) with the heartbeat that fails trials of dead workers after
    ``grace_period`` seconds (default: twice ``heartbeat_interval``). Raises ``StorageError`` in one line."""
    _quiet_experimental()
    try:
        if url.endswith(".log") and "://" not in url:
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
        options = {}
        if url.startswith("sqlite:"):
            # several worker processes write to one file: wait for its lock rather than fail at once
            options["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                          **options)
    except Exception as exc:  # SQLAlchemy, driver and OS errors all mean the same to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot open storage {url}: {reason}") from None


def load_study(study_name, storage):
    """The study ``study_name`` already in ``storage`` (a URL or an opened storage), never creating one:
    ``StorageError`` for a storage file that does not exist, ``ValueError`` listing the studies there."""
    if isinstance(storage, str):
        path = storage[len("sqlite:///"):] if storage.startswith("sqlite:///") else storage
        if (storage.startswith("sqlite:///") or "://" not in storage) and not os.path.exists(path):
            raise StorageError(f"no study storage at {path}")
    opened = open_storage(storage) if isinstance(storage, str) else storage
    names = optuna.get_all_study_names(opened)
    if study_name not in names:
        raise ValueError(f"no study {study_name!r} in {storage}; "
                         + (f"studies there: {', '.join(sorted(names))}" if names else "it holds no study"))
    return optuna.load_study(study_name=study_name, storage=opened)


def worker_seed(seed, worker, trials_before):
    """The sampler seed of one worker: a function of the run's ``seed``, the worker's index and the number
    of trials the study held before the run, so a re-run explores new points and stays reproducible."""
    digest = hashlib.sha256(f"{seed}/{worker}/{trials_before}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def make_sampler(name, seed):
    """Optuna's sampler called ``name`` (``tpe`` or ``random``), seeded."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


class GridPointSampler(optuna.samplers.BaseSampler):
    """Grid search over ``points`` (dicts of name to value): the trial numbered ``first + i`` takes point
    ``i``. Optuna numbers trials uniquely even across processes, so no point runs twice however many
    workers share the study; Optuna's own GridSampler and its trial queue can both repeat a point when
    processes share an SQLite file (its queue pops are not atomic there). A parameter outside the grid
    is drawn at random."""

    def __init__(self, points, first, seed=None):
        self.points, self.first = points, first
        self._random = optuna.samplers.RandomSampler(seed=seed)

    def point(self, number):
        """The point of the trial numbered ``number``, or None past the grid (trials created elsewhere
        took numbers meant for points)."""
        index = number - self.first
        return self.points[index] if 0 <= index < len(self.points) else None

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        point = self.point(trial.number) or {}
        if param_name in point:
            return point[param_name]
        return self._random.sample_independent(study, trial, param_name, param_distribution)


def make_pruner(name):
    """Optuna's pruner called ``name`` (``median``, ``hyperband``, ``none``) with Optuna's defaults."""
    if name == "median":
        return optuna.pruners.MedianPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")


def epoch_reporter(trial, epochs, metric="val_acc"):
    """An ``on_epoch_end(epoch, history)`` for ``gpudl.train.fit`` that reports ``history[metric][-1]`` to
    ``trial`` at step ``epoch + 1`` and raises ``optuna.TrialPruned`` when the pruner says so — never
    after the last of ``epochs`` epochs, whose result is the trial's."""
    def on_epoch_end(epoch, history):
        raise_if_interrupted()
        value = history[metric][-1]
        trial.report(value, epoch + 1)
        if epoch + 1 < epochs and trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1} of {epochs} ({metric} {value:.4f})")
    return on_epoch_end


_interrupted = threading.Event()


def _remember_and_raise(signum, frame):
    """SIGINT while a worker runs: remember it, then raise KeyboardInterrupt as Python does. Python drops a
    KeyboardInterrupt raised inside a destructor or weakref callback (SQLAlchemy's connection pool runs
    some), so the remembered interrupt fails the running trial at its next epoch and stops the study after it."""
    _interrupted.set()
    raise KeyboardInterrupt


def raise_if_interrupted(*_):
    """Raise KeyboardInterrupt if a Ctrl-C reached this worker (an epoch reporter and a study callback)."""
    if _interrupted.is_set():
        raise KeyboardInterrupt


@contextmanager
def _interrupts_remembered():
    """Within the block, SIGINT is remembered as well as raised (main thread only, where signals arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _interrupted.clear()
    previous = signal.signal(signal.SIGINT, _remember_and_raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _uncovered_points(study, grid):
    """The points of ``grid`` that no completed, pruned or running trial of ``study`` holds."""
    names = sorted(grid)
    covered = {tuple(trial.params.get(name) for name in names)
               for trial in study.get_trials(deepcopy=False, states=_COVERING_STATES)}
    return [point for point in grid_points(grid) if tuple(point[name] for name in names) not in covered]


class _GridPointsOnly:
    """A grid objective that runs only trials holding a point: a trial numbered past the grid (other
    processes, e.g. another machine, created trials meanwhile) stops this worker, pruned with no
    parameters, instead of repeating a point."""

    def __init__(self, objective, sampler):
        self.objective, self.sampler = objective, sampler

    def __call__(self, trial):
        if self.sampler.point(trial.number) is None:
            trial.study.stop()
            raise optuna.TrialPruned("past the grid's points")
        return self.objective(trial)


@dataclass
class _Run:
    """What every worker of one run needs (picklable, for worker processes)."""
    storage: object  # a URL (each process opens it) or an opened storage (in this process)
    heartbeat_interval: int | None
    grace_period: int | None
    study_name: str
    sampler: str
    points: list | None  # the grid's points for this run's trials, in trial-number order
    seed: int
    trials_before: int
    pruner: str
    objective: object
    callbacks: list
    catch: tuple
    quiet: bool

    def work(self, index, n_trials):
        """Worker ``index``: load the study and run ``n_trials`` trials of the objective on it."""
        _quiet_experimental()
        if self.quiet:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = self.storage
        if isinstance(storage, str):
            storage = open_storage(storage, self.heartbeat_interval, self.grace_period)
        seed = worker_seed(self.seed, index, self.trials_before)
        if self.sampler == "grid":
            sampler = GridPointSampler(self.points, self.trials_before, seed)
            objective = _GridPointsOnly(self.objective, sampler)
        else:
            sampler, objective = make_sampler(self.sampler, seed), self.objective
        study = optuna.load_study(study_name=self.study_name, storage=storage, sampler=sampler,
                                  pruner=make_pruner(self.pruner))
        with _interrupts_remembered():
            study.optimize(objective, n_trials=n_trials, callbacks=[*self.callbacks, raise_if_interrupted],
                           catch=self.catch)


def _worker_process(run, index, n_trials):
    """The body of a worker process: one line on stderr instead of a traceback when it stops early."""
    try:
        run.work(index, n_trials)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        print(f"gpudl tune: worker {index}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def _usable_cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def _thread_variables(threads):
    """Set the BLAS/OpenMP thread variables that processes started inside inherit."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _stop(processes):
    """Interrupt the workers still running (Ctrl-C at a terminal reaches them already; a SIGINT sent to this
    process alone does not) so that each fails its running trial, and wait for them; terminate the stragglers."""
    for process in processes:
        process.join(timeout=2)
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGINT)
    for process in processes:
        process.join(timeout=30)
        if process.is_alive():
            process.terminate()
            process.join()


def _run_processes(run, jobs):
    """Run each (index, n_trials) of ``jobs`` in a process of its own, the CPUs' threads divided among them,
    and wait for all. On Ctrl-C the workers fail their running trial and stop."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter reads the thread variables at start
    processes = [context.Process(target=_worker_process, args=(run, index, count)) for index, count in jobs]
    with _thread_variables(max(1, _usable_cpus() // len(jobs))):
        for process in processes:
            process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        _stop(processes)
        raise
    stopped = [f"worker {index} (exit code {process.exitcode})"
               for (index, _), process in zip(jobs, processes) if process.exitcode != 0]
    if stopped:
        raise RuntimeError(f"{', '.join(stopped)} stopped early; completed trials are stored, and a trial left "
                           f"running is failed by the heartbeat")


def optimize(objective, n_trials=None, *, study_name="gpudl", storage=None, sampler="tpe", pruner="median",
             seed=0, workers=1, grid=None, direction="maximize", heartbeat_interval=60, grace_period=None,
             callbacks=(), catch=(), quiet=False):
    """Run ``n_trials`` more trials of ``objective(trial) -> float`` and return the ``optuna.Study``.

    The study ``study_name`` in ``storage`` (a URL, see ``open_storage``; ``None``: in memory) is
    created or resumed. ``sampler`` is ``tpe`` (Bayesian optimisation), ``random`` or ``grid``; the grid
    (``grid``: name -> values) runs each point once (see ``GridPointSampler``), and ``n_trials``
    defaults to the points not yet covered. Each worker's sampler is seeded from ``seed``, its index and the
    number of trials already in the study. ``pruner`` (``median``, ``hyperband``, ``none``) acts on
    the values the objective reports (see ``epoch_reporter``). ``workers > 1`` runs local processes on
    the same storage, dividing the CPU threads among them (the objective must then be picklable, and
    a script calling this must guard its entry point with ``if __name__ == "__main__":``).
    ``callbacks`` (``callback(study, frozen_trial)``) run after each trial in the worker; ``quiet``
    silences Optuna's own log lines."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    make_pruner(pruner)
    if sampler == "grid" and not grid:
        raise ValueError("the grid sampler needs grid={name: [values, ...]}")
    if sampler != "grid" and n_trials is None:
        raise ValueError(f"n_trials is needed for the {sampler} sampler")
    if workers < 1 or (n_trials is not None and n_trials < 0):
        raise ValueError(f"workers must be >= 1 and n_trials >= 0, got workers={workers}, n_trials={n_trials}")
    if workers > 1 and not isinstance(storage, str):
        raise ValueError("several workers need a storage URL that each of them can open")
    if quiet:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is None:
        opened = optuna.storages.InMemoryStorage()
    else:
        opened = open_storage(storage, heartbeat_interval, grace_period) if isinstance(storage, str) else storage
    study = optuna.create_study(storage=opened, study_name=study_name, direction=direction, load_if_exists=True)
    points = None if sampler != "grid" else _uncovered_points(study, grid)[:n_trials]
    run = _Run(opened, heartbeat_interval, grace_period, study_name, sampler, points, seed, len(study.trials),
               pruner, objective, list(callbacks), tuple(catch), quiet)
    if sampler == "grid":
        n_trials = len(points)
    jobs = [(index, n_trials // workers + (index < n_trials % workers)) for index in range(min(workers, n_trials))]
    if len(jobs) == 1:
        run.work(*jobs[0])
    elif jobs:
        run.storage = storage
        _run_processes(run, jobs)
    return study
