"""Device errors behave like host errors: a bad class target or embedding index raises NumPy's
IndexError on the GPU too, at the latest at the step's next host synchronisation, without an
extra synchronisation in the step (``gpudl.check_device_errors``, ``GPUDL_SYNC_CHECKS=1``,
per-thread error logs). The GPU cases run on a real GPU or through the CuPy test double."""
import threading

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn, optim
from gpudl.data import DataLoader, TensorDataset, spiral

try:
    from tests import cupy_double
    _COUNTS = cupy_double.installed()
except ImportError:
    _COUNTS = False

F = nn.functional
MESSAGE = r"target 7 is out of bounds: valid range is \[0, 3\) \(or ignore_index=-100\)"


def _readme_loop(device, bad_batch, read_loss=True, progress=None):
    """The README's training loop on ``device`` for one epoch; batch ``bad_batch`` gets target 7
    of 3 classes. ``progress`` collects ``(batch, phase)`` as the loop goes."""
    progress = [] if progress is None else progress
    gd.manual_seed(0)
    x, t = spiral(n_per_class=20, n_classes=3)
    t = t.copy()
    t[bad_batch * 10 + 3] = 7
    loader = DataLoader(TensorDataset(x, t), batch_size=10, shuffle=False)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3)).to(device)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    for batch, (xb, tb) in enumerate(loader):
        xb, tb = xb.to(device), tb.to(device)
        progress.append((batch, "loss"))
        loss = F.softmax_cross_entropy(model(xb), tb)
        progress.append((batch, "step"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if read_loss:
            progress.append((batch, "item"))
            print(f"loss {loss.item():.3f}")


def test_cpu_raises_at_the_loss():
    progress = []
    with pytest.raises(IndexError, match=MESSAGE):
        _readme_loop("cpu", bad_batch=2, progress=progress)
    assert progress[-1] == (2, "loss")


def test_gpu_raises_the_same_error_at_loss_item(device):
    """The README loop: on the GPU the bad batch's loss.item() raises NumPy's IndexError."""
    if device == "cpu":
        pytest.skip("the CPU case is test_cpu_raises_at_the_loss")
    progress = []
    with pytest.raises(IndexError, match=MESSAGE):
        _readme_loop(device, bad_batch=2, progress=progress)
    assert progress[-1] == (2, "item")  # backward and the optimizer step ran without waiting


def test_gpu_without_reads_raises_at_check_device_errors(device):
    """A loop that never syncs: the error waits for gd.check_device_errors() (or any later read)."""
    if device == "cpu":
        pytest.skip("the host raises at once")
    _readme_loop(device, bad_batch=1, read_loss=False)
    with pytest.raises(IndexError, match=MESSAGE):
        gd.check_device_errors()
    gd.check_device_errors()  # read and cleared


def test_sync_checks_raise_at_the_op(device, monkeypatch):
    monkeypatch.setenv("GPUDL_SYNC_CHECKS", "1")
    logits = gd.zeros(4, 3, device=device, requires_grad=True)
    with pytest.raises(IndexError, match=MESSAGE):
        F.softmax_cross_entropy(logits, gd.tensor([0, 1, 7, 2], device=device))
    with pytest.raises(IndexError, match=r"embedding index 5 is out of bounds: valid range is \[0, 5\)$"):
        F.embedding(gd.tensor([[1, 5]], device=device), gd.zeros(5, 2, device=device))


@pytest.mark.parametrize("read", ["numpy", "float", "bool", "tolist", "synchronize"])
def test_every_host_read_raises(device, read):
    if device == "cpu":
        pytest.skip("the host raises at once")
    out = F.embedding(gd.tensor([2, 6, 1], device=device), gd.ones(5, 2, device=device))
    total = out.sum()
    readers = {"numpy": out.numpy, "float": lambda: float(total), "bool": lambda: bool(total),
               "tolist": out.tolist, "synchronize": lambda: gd.backend.get_cupy_backend().synchronize()}
    with pytest.raises(IndexError, match=r"embedding index 6 is out of bounds: valid range is \[0, 5\)$"):
        readers[read]()
    assert float(total) == 6.0  # indices were clipped meanwhile: in-bounds reads, no garbage


def test_valid_indices_read_without_error(device):
    loss = F.softmax_cross_entropy(gd.zeros(3, 3, device=device), gd.tensor([0, 2, -100], device=device))
    np.testing.assert_allclose(loss.item(), np.log(3), rtol=1e-6)
    gd.check_device_errors()


def test_pending_errors_are_per_thread(device):
    if device == "cpu":
        pytest.skip("the host raises at once")
    F.softmax_cross_entropy(gd.zeros(4, 3, device=device), gd.tensor([0, 1, 7, 2], device=device))
    seen = []

    def other():
        loss = F.softmax_cross_entropy(gd.zeros(2, 3, device=device), gd.tensor([0, 1], device=device))
        seen.append(loss.item())   # this thread's checks passed; the main thread's are not its own
        gd.check_device_errors()
        seen.append("clean")

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen[1] == "clean" and np.isclose(seen[0], np.log(3))
    with pytest.raises(IndexError, match=MESSAGE):
        gd.check_device_errors()


def test_many_unread_checks_never_force_a_sync(device):
    """The error log grows on the device: 300 checks without a read cost no synchronisation,
    and the first bad index is the one reported."""
    if not _COUNTS or device == "cpu":
        pytest.skip("needs the CuPy test double, which counts synchronisations")
    weight = gd.ones(4, 2, device=device)
    state = cupy_double.counters()
    syncs = state.syncs
    for k in range(300):
        F.embedding(gd.tensor([k % 4, 9 if k == 150 else 0], device=device), weight)
    assert state.syncs == syncs
    with pytest.raises(IndexError, match=r"embedding index 9 is out of bounds"):
        gd.check_device_errors()
