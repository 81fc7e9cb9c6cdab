"""DataLoader(num_workers=N, prefetch_factor=...): background batches, fixed order, clean shutdown."""
import _thread
import threading

import numpy as np
import pytest

from gpudl.data import DataLoader, Dataset, TensorDataset


def _loader_threads():
    return [t for t in threading.enumerate() if t.name.startswith("gpudl-loader") and t.is_alive()]


class _Items(Dataset):
    """A generic data set (item by item); ``on_item(i)`` runs inside ``__getitem__``, on the worker thread."""

    def __init__(self, n, on_item=None):
        self.n, self.on_item = n, on_item
        self.threads = set()

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.threads.add(threading.current_thread().name)
        if self.on_item is not None:
            self.on_item(i)
        return np.array([i, -i], dtype=np.float32), i % 4


def _ids(loader):
    return [x.numpy()[:, 0].astype(int).tolist() for x, _ in loader]


@pytest.mark.parametrize("make", [lambda n: _Items(n),
                                  lambda n: TensorDataset(np.stack([np.arange(n), -np.arange(n)], 1).astype(np.float32),
                                                          np.arange(n) % 4)],
                         ids=["items", "arrays"])
def test_same_batches_in_the_same_order_for_any_number_of_workers(make, device):
    kwargs = dict(batch_size=7, shuffle=True, seed=3, device=device)
    reference = _ids(DataLoader(make(50), **kwargs))
    for workers, prefetch in ((1, None), (2, 1), (3, 4)):
        loader = DataLoader(make(50), num_workers=workers, prefetch_factor=prefetch, **kwargs)
        assert _ids(loader) == reference
        x, t = next(iter(loader))
        assert x.device == device and t.dtype == np.int64 and x.dtype == np.float32
    assert not _loader_threads()


def test_batches_are_assembled_on_worker_threads_while_the_step_runs():
    ahead = threading.Event()
    dataset = _Items(40, on_item=lambda i: ahead.set() if i >= 10 else None)
    loader = DataLoader(dataset, batch_size=10, num_workers=2, prefetch_factor=1)
    for step, (x, _) in enumerate(loader):
        if step == 0:
            # the "training step" of batch 0 blocks here; batch 1 (examples 10..19) must be built meanwhile
            assert ahead.wait(timeout=30), "batch 1 was not assembled while the step of batch 0 ran"
    assert dataset.threads and all(name.startswith("gpudl-loader") for name in dataset.threads)
    assert not _loader_threads()


def test_an_exception_in_getitem_propagates_and_no_thread_is_left():
    def fail(i):
        if i == 23:
            raise RuntimeError(f"broken example {i}")

    loader = DataLoader(_Items(60, on_item=fail), batch_size=5, num_workers=3)
    seen = []
    with pytest.raises(RuntimeError, match="broken example 23"):
        for x, _ in loader:
            seen.append(int(x.numpy()[0, 0]))
    assert seen == [0, 5, 10, 15]            # every batch before the broken one, in order
    assert not _loader_threads()


def test_ctrl_c_and_break_shut_the_workers_down():
    def interrupt(i):
        if i == 17:
            _thread.interrupt_main()          # as if the user pressed Ctrl-C while batch 3 is assembled

    with pytest.raises(KeyboardInterrupt):
        for _ in DataLoader(_Items(200, on_item=interrupt), batch_size=5, num_workers=2):
            pass
    assert not _loader_threads()
    for _ in DataLoader(_Items(200), batch_size=5, num_workers=2):
        break
    assert not _loader_threads()


def test_an_exception_in_the_step_shuts_the_workers_down():
    with pytest.raises(ValueError, match="step failed"):
        for _ in DataLoader(_Items(100), batch_size=5, num_workers=2):
            raise ValueError("step failed")
    assert not _loader_threads()


def test_worker_argument_errors():
    data = _Items(4)
    with pytest.raises(ValueError, match="num_workers must be a non-negative integer, got -1"):
        DataLoader(data, num_workers=-1)
    with pytest.raises(ValueError, match="prefetch_factor= needs num_workers > 0"):
        DataLoader(data, prefetch_factor=2)
    with pytest.raises(ValueError, match="prefetch_factor must be a positive integer, got 0"):
        DataLoader(data, num_workers=1, prefetch_factor=0)
    assert DataLoader(data, num_workers=2).prefetch_factor == 2
