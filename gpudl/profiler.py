"""``gpudl.profile()``: forward and backward time per op type, so one can see where a step goes.

While a profile is active, every ``Function`` times its forward (in ``apply``) and its backward
(in the engine); on the GPU each timed region first waits for the device, so the times are the
op's own and not whatever was queued before it. Where a device counter is installed
(``gpudl.backend.set_device_counters``: the CuPy test double installs one), it also counts each
op's kernel launches and device-to-host synchronisations (the profiler's own waits excluded).
A profile records the ops of the thread that entered it. Below the table: the buffer pool's
hits, misses and dropped arrays during the profile (all threads) and the bytes it held at its end.
"""
import threading
import time
from collections import defaultdict

from . import backend as _backend
from .backend.buffer_pool import POOL


class _Active(threading.local):
    """The profile recording on this thread, or None (checked once per op: cheap when off)."""

    profile = None


active = _Active()


class Profile:
    """Accumulated ``calls``, forward and backward seconds, and (where counted) kernel
    ``launches`` and device-to-host ``syncs`` (forward and backward together) per op type."""

    def __init__(self, print_on_exit=True, file=None):
        self.calls = defaultdict(int)
        self.forward_seconds = defaultdict(float)
        self.backward_seconds = defaultdict(float)
        self.launches = defaultdict(int)
        self.syncs = defaultdict(int)
        self.counted = False
        self.print_on_exit = print_on_exit
        self.file = file
        self._previous = None
        self._pool_at_start = self._pool_at_end = None

    def __enter__(self):
        self._previous = active.profile
        active.profile = self
        self._pool_at_start = POOL.stats()
        return self

    def __exit__(self, *exc):
        active.profile = self._previous
        self._pool_at_end = POOL.stats()
        if self.print_on_exit and exc[0] is None:
            print(self.table(), file=self.file)
        return False

    def record(self, op: str, seconds: float, backward: bool, counts=None):
        """Add ``seconds`` of ``op``'s forward (or backward) to the totals, and ``counts``
        (``(launches, syncs)``, None when not counted)."""
        if counts is not None:
            self.counted = True
            self.launches[op] += counts[0]
            self.syncs[op] += counts[1]
        if backward:
            self.backward_seconds[op] += seconds
        else:
            self.calls[op] += 1
            self.forward_seconds[op] += seconds

    def table(self) -> str:
        """The totals as a text table, most expensive op type first."""
        ops = set(self.forward_seconds) | set(self.backward_seconds)
        total = sum(self.forward_seconds.values()) + sum(self.backward_seconds.values()) or 1.0
        rows = sorted(ops, key=lambda op: -(self.forward_seconds[op] + self.backward_seconds[op]))

        def counts(launches, syncs):
            return f"{launches:>10}{syncs:>7}" if self.counted else ""

        lines = [f"{'op':<24}{'calls':>8}{'forward ms':>13}{'backward ms':>13}{'total ms':>11}{'share':>8}"
                 + (f"{'launches':>10}{'syncs':>7}" if self.counted else "")]
        for op in rows:
            both = self.forward_seconds[op] + self.backward_seconds[op]
            lines.append(f"{op:<24}{self.calls[op]:>8}{1e3 * self.forward_seconds[op]:>13.3f}"
                         f"{1e3 * self.backward_seconds[op]:>13.3f}{1e3 * both:>11.3f}{100 * both / total:>7.1f}%"
                         + counts(self.launches[op], self.syncs[op]))
        lines.append(f"{'total':<24}{sum(self.calls.values()):>8}{1e3 * sum(self.forward_seconds.values()):>13.3f}"
                     f"{1e3 * sum(self.backward_seconds.values()):>13.3f}{1e3 * total:>11.3f}{'':>8}"
                     + counts(sum(self.launches.values()), sum(self.syncs.values())))
        pool = self.buffer_pool()
        lines.append(f"buffer pool: {pool['hits']} hits, {pool['misses']} misses, {pool['dropped']} dropped, "
                     f"{pool['held_bytes'] / 2**20:.1f} MiB held")
        return "\n".join(lines)

    def buffer_pool(self) -> dict:
        """The buffer pool's ``hits``, ``misses`` and ``dropped`` arrays during the profile (so far, while
        it runs) and the ``held_bytes`` at its end."""
        end = self._pool_at_end or POOL.stats()
        start = self._pool_at_start or dict.fromkeys(end, 0)
        counts = {key: end[key] - start[key] for key in ("hits", "misses", "dropped")}
        return {**counts, "held_bytes": end["held_bytes"]}


def profile(print_on_exit=True, file=None) -> Profile:
    """Context manager that times every op's forward and backward by op type and prints a table
    when it exits (``print_on_exit=False`` to only collect; read ``.table()``)."""
    return Profile(print_on_exit, file)


def timed(op_name, backend, device, run, *args, backward=False):
    """Run ``run(*args)`` and record its time (and launches and syncs, where counted) under
    ``op_name``, synchronising the device around it."""
    backend.synchronize(device)
    before = _backend.device_counters()
    started = time.perf_counter()
    result = run(*args)
    after = _backend.device_counters()
    backend.synchronize(device)
    counts = None if before is None else (after[0] - before[0], after[1] - before[1])
    active.profile.record(op_name, time.perf_counter() - started, backward, counts)
    return result
