"""Random number state: one host generator for initialisation and sampling, and the
(seed, step) counter that keys the counter-based dropout hash."""
import numpy

_state = {"seed": 0, "generator": numpy.random.default_rng(0), "dropout_step": 0}


def manual_seed(seed: int) -> None:
    """Seed gpudl's generators: the same seed gives the same numbers (and dropout masks)."""
    if not isinstance(seed, (int, numpy.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative integer, got {seed!r}")
    _state["seed"] = int(seed)
    _state["generator"] = numpy.random.default_rng(int(seed))
    _state["dropout_step"] = 0


def host_generator() -> numpy.random.Generator:
    """The host generator every random factory and initialiser draws from."""
    return _state["generator"]


def next_dropout_key() -> tuple:
    """``(seed, step)`` for the next dropout mask; the step advances on every call."""
    step = _state["dropout_step"]
    _state["dropout_step"] = step + 1
    return _state["seed"], step


def seed_dropout(seed: int, step: int = 0) -> None:
    """Set the dropout key stream to ``(seed, step)`` (a training loop derives it from seed and epoch
    so that a resumed run draws the same masks)."""
    _state["seed"] = int(seed)
    _state["dropout_step"] = int(step)


def new_generator(seed: int) -> numpy.random.Generator:
    """A fresh host generator, independent of the global one (for tests and tools)."""
    return numpy.random.default_rng(seed)
