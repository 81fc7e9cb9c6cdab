"""What a study shows a person: one line per finished trial, a table of the best trials, ``trials.csv``
and PNG plots (optimisation history, parameter importances, parallel coordinates)."""
import csv
import os
import warnings
from pathlib import Path

import optuna

TrialState = optuna.trial.TrialState
PLOTS = {
    "history.png": "plot_optimization_history",
    "importances.png": "plot_param_importances",
    "parallel_coordinate.png": "plot_parallel_coordinate",
}


def _text(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_params(params):
    """``name=value`` pairs, floats to 4 significant digits."""
    return " ".join(f"{name}={_text(value)}" for name, value in params.items())


class TrialPrinter:
    """An Optuna callback printing one line per finished trial; ``label`` names the objective and
    ``percent`` shows it as a percentage (picklable, so worker processes can carry it)."""

    def __init__(self, label="value", percent=False):
        self.label, self.percent = label, percent

    def value(self, value):
        """The objective value as shown to a person."""
        if value is None:
            return "-"
        return f"{100 * value:.2f}%" if self.percent else f"{value:.6g}"

    def line(self, trial):
        """The line of one finished trial."""
        state = trial.state.name.lower()
        if trial.state == TrialState.PRUNED and trial.last_step is not None:
            state += f" after step {trial.last_step}"
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        return (f"trial {trial.number} {state}: {self.label} {self.value(trial.value)} ({seconds:.1f} s)  "
                f"{format_params(trial.params)}")

    def __call__(self, study, trial):
        print(self.line(trial), flush=True)


def best_trials(study, top):
    """The ``top`` completed trials, best first."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(done, key=lambda trial: trial.value, reverse=maximize)[:top]


def summary(study, printer, top=5):
    """Lines describing ``study``: trial counts by state, a table of the best trials, the best
    parameters and, when the trial stored one, the command that reproduces it."""
    counts = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    lines = [f"study {study.study_name}: {sum(counts.values())} trials ("
             + ", ".join(f"{count} {state}" for state, count in sorted(counts.items())) + ")"]
    best = best_trials(study, top)
    if not best:
        return lines + ["no completed trial yet"]
    names = sorted({name for trial in best for name in trial.params})
    header = ["trial", printer.label] + names + ["seconds"]
    rows = [[str(trial.number), printer.value(trial.value)] + [_text(trial.params.get(name, "-")) for name in names]
            + [f"{trial.duration.total_seconds():.1f}" if trial.duration else "-"] for trial in best]
    widths = [max(len(row[column]) for row in [header] + rows) for column in range(len(header))]
    lines.append(f"best {len(best)} completed trials:")
    lines += ["  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in [header] + rows]
    lines.append(f"best trial {best[0].number}: {printer.label} {printer.value(best[0].value)}; "
                 f"parameters {format_params(best[0].params)}")
    if "command" in best[0].user_attrs:
        lines.append(f"reproduce: {best[0].user_attrs['command']}")
    return lines


def write_trials_csv(study, path):
    """Every trial of ``study`` as one row of ``path`` (number, state, value, steps, times, parameters,
    command), written atomically."""
    trials = study.get_trials(deepcopy=False)
    names = sorted({name for trial in trials for name in trial.params})
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["number", "state", "value", "steps", "duration_s", "datetime_start", "datetime_complete",
                         *(f"param_{name}" for name in names), "command"])
        for trial in trials:
            writer.writerow([trial.number, trial.state.name, "" if trial.value is None else trial.value,
                             len(trial.intermediate_values),
                             "" if trial.duration is None else round(trial.duration.total_seconds(), 3),
                             trial.datetime_start or "", trial.datetime_complete or "",
                             *(trial.params.get(name, "") for name in names), trial.user_attrs.get("command", "")])
    os.replace(temporary, path)
    return path


def write_plots(study, folder):
    """Optuna's matplotlib plots of ``study`` as PNGs in ``folder``; returns (written paths, skipped
    plots with the reason, e.g. too few completed trials for importances)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots
    written, skipped = [], []
    for name, function in PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental-API and too-few-trials warnings
                axes = getattr(plots, function)(study)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            figure.savefig(Path(folder) / name, dpi=100, bbox_inches="tight")
            plt.close(figure)
            written.append(Path(folder) / name)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            skipped.append((name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    return written, skipped
