"""Hyperparameter search on Optuna (``pip install 'gpudl[tune]'``): ``gpudl tune`` on the command line,
and this API for a model and objective of your own::

    from gpudl import tune

    def objective(trial):
        params = tune.suggest(trial, {"lr": "log:1e-4:1e-1", "width": "int:8:64"})
        ...                                                    # build and train with params
        history = fit(..., epochs=5, on_epoch_end=tune.epoch_reporter(trial, epochs=5))
        return max(history["val_acc"])

    study = tune.optimize(objective, n_trials=20, storage="sqlite:///search.db", study_name="mine")
"""
try:
    import optuna  # noqa: F401
except ImportError as exc:
    raise ImportError("gpudl.tune needs Optuna: pip install 'gpudl[tune]'") from exc

from .report import TrialPrinter, best_trials, summary, write_plots, write_trials_csv
from .search import (PRUNERS, SAMPLERS, GridPointSampler, StorageError, epoch_reporter, load_study, make_pruner,
                     make_sampler, open_storage, optimize, worker_seed)
from .space import FORMS, ParamSpec, grid_of, grid_points, parse_param, suggest

__all__ = ["FORMS", "PRUNERS", "SAMPLERS", "GridPointSampler", "ParamSpec", "StorageError", "TrialPrinter", "best_trials",
           "epoch_reporter", "grid_of", "grid_points", "load_study", "make_pruner", "make_sampler",
           "open_storage", "optimize", "parse_param", "suggest", "summary", "worker_seed", "write_plots",
           "write_trials_csv"]
