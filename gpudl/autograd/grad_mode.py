"""Switching graph recording on and off: ``no_grad()`` and ``enable_grad()``.

The mode is per thread, as PyTorch's: an evaluation thread inside ``no_grad`` leaves the graphs
another thread builds at the same time untouched, and every new thread starts with recording on.
"""
import contextlib
import functools
import threading


class _GradMode(threading.local):
    def __init__(self):
        self.enabled = True  # runs once in each thread, on its first look at the mode


grad_mode = _GradMode()


class _SetGradMode(contextlib.ContextDecorator):
    def __init__(self, enabled: bool):
        self._enabled = enabled
        self._previous = []

    def __enter__(self):
        self._previous.append(grad_mode.enabled)
        grad_mode.enabled = self._enabled
        return self

    def __exit__(self, *exc):
        grad_mode.enabled = self._previous.pop()
        return False


@functools.wraps(_SetGradMode, updated=())
def no_grad():
    """Context manager (or decorator) in which ops record no graph."""
    return _SetGradMode(False)


def enable_grad():
    """Context manager (or decorator) that turns graph recording back on inside ``no_grad``."""
    return _SetGradMode(True)


def is_grad_enabled() -> bool:
    """True when ops in this thread currently record the graph."""
    return grad_mode.enabled
