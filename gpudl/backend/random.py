"""Random number state: one host generator for initialisation and sampling, and the
(seed, step) counter that keys the counter-based dropout hash.

The dropout stream is per thread, so that its read-then-advance needs no lock and a thread's
masks do not depend on what other threads draw: a thread starts at ``(seed, 0)`` with the seed of
the last ``manual_seed`` (a thread of its own that needs other masks calls ``seed_dropout``).
"""
import threading

import numpy

_state = {"seed": 0, "generator": numpy.random.default_rng(0)}


class _DropoutStream(threading.local):
    def __init__(self):
        self.seed = _state["seed"]  # runs once in each thread, on its first dropout
        self.step = 0


_dropout = _DropoutStream()


def manual_seed(seed: int) -> None:
    """Seed gpudl's generators: the same seed gives the same numbers (and dropout masks).

    The host generator is process-wide; the dropout stream restarts at ``(seed, 0)`` in this thread
    and in every thread that has not drawn a mask yet."""
    if not isinstance(seed, (int, numpy.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative integer, got {seed!r}")
    _state["seed"] = int(seed)
    _state["generator"] = numpy.random.default_rng(int(seed))
    seed_dropout(int(seed))


def host_generator() -> numpy.random.Generator:
    """The host generator every random factory and initialiser draws from."""
    return _state["generator"]


def next_dropout_key() -> tuple:
    """``(seed, step)`` for this thread's next dropout mask; the step advances on every call."""
    stream = _dropout
    step = stream.step
    stream.step = step + 1
    return stream.seed, step


def seed_dropout(seed: int, step: int = 0) -> None:
    """Set this thread's dropout key stream to ``(seed, step)`` (a training loop derives it from seed
    and epoch so that a resumed run draws the same masks)."""
    _dropout.seed = int(seed)
    _dropout.step = int(step)


def new_generator(seed: int) -> numpy.random.Generator:
    """A fresh host generator, independent of the global one (for tests and tools)."""
    return numpy.random.default_rng(seed)
