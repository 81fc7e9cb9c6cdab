"""Training curves as a PNG (matplotlib is an optional extra: ``pip install 'gpudl[plot]'``)."""


def history_figure(history, title="training"):
    """A matplotlib figure of loss and accuracy per epoch (train and validation) side by side.

    Epoch ticks are whole numbers, also for a single epoch (MaxNLocator's default wants two ticks
    and otherwise falls back to fractions)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    epochs = range(1, len(history["train_loss"]) + 1)
    figure, (loss_axes, acc_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for axes, metric, label in ((loss_axes, "loss", "loss"), (acc_axes, "acc", "accuracy")):
        axes.plot(epochs, history[f"train_{metric}"], marker="o", label="train")
        if history.get(f"val_{metric}"):
            axes.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_history(history, path, title="training"):
    """Write ``history_figure(history, title)`` to ``path`` (PNG)."""
    import matplotlib.pyplot as plt
    figure = history_figure(history, title)
    figure.savefig(path, dpi=100)
    plt.close(figure)
