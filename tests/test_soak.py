"""Soak test: memory stays flat over thousands of training steps (opt-in: ``GPUDL_SOAK=1``).

10,000 MLP steps and 1,000 CNN and LSTM steps at small batches. Growth is measured from the end
of a warm-up (buffers pooled, optimizer state created) to the end of the run: on the host with
tracemalloc (NumPy reports its arrays to it), on a CUDA device (or the CuPy test double) as the
growth of CuPy's memory pool's used bytes. Under 1 MB each. CI runs it once, through the CuPy
double, so that both the NumPy and the device case run (scripts/test.sh).
"""
import gc
import os
import time
import tracemalloc

import numpy as np
import pytest

import gpudl as gd
from gpudl import backend, nn, optim
from gpudl.models import CNN, MLP, LSTMClassifier

pytestmark = pytest.mark.skipif(os.environ.get("GPUDL_SOAK") != "1",
                                reason="the soak test is opt-in: set GPUDL_SOAK=1 to run it")

WARMUP = 50
LIMIT = 1 << 20
CASES = {  # model, input shape, steps
    "mlp": (lambda: MLP(in_features=20, hidden_sizes=(32, 32), num_classes=4, dropout=0.1), (8, 20), 10_000),
    "cnn": (lambda: CNN(channels=(4, 8), hidden_size=16, num_classes=4, image_size=8), (4, 1, 8, 8), 1_000),
    "lstm": (lambda: LSTMClassifier(input_size=8, hidden_size=16, num_classes=4), (4, 6, 8), 1_000),
}


class DeviceMemory:
    """Bytes in use now: traced host allocations, or the device memory pool's used bytes."""

    def __init__(self, device):
        self.pool = None if device == "cpu" else backend.backend_for(backend.get_device(device)).xp \
            .get_default_memory_pool()

    def __enter__(self):
        gc.collect()
        if self.pool is None:
            tracemalloc.start()
        self.start = self.used()
        return self

    def used(self):
        return tracemalloc.get_traced_memory()[0] if self.pool is None else self.pool.used_bytes()

    def growth(self):
        gc.collect()
        return self.used() - self.start

    def __exit__(self, *exc):
        if self.pool is None:
            tracemalloc.stop()


@pytest.mark.parametrize("name", list(CASES))
def test_memory_stays_flat_over_thousands_of_steps(name, device):
    make, shape, steps = CASES[name]
    gd.manual_seed(0)
    model = make().to(device)
    opt = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    x = gd.tensor(rng.standard_normal(shape).astype(np.float32), device=device)
    t = gd.tensor(rng.integers(0, 4, shape[0]), device=device)
    total = gd.zeros((), device=device)  # a running sum kept on the device, as a training loop's logging

    def step():
        loss = nn.functional.cross_entropy(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with gd.no_grad():
            total.add_(loss.detach())
        return loss

    for _ in range(WARMUP):
        step()
    started = time.perf_counter()
    with DeviceMemory(device) as memory:
        for k in range(steps):
            loss = step()
            if k % 100 == 0:  # log and evaluate now and then, as a training loop does (the log's
                loss.item()   # host sync also reads the device's pending error flags)
                with gd.no_grad():
                    model.eval()
                    model(x)
                    model.train()
        growth = memory.growth()
    seconds = time.perf_counter() - started
    assert np.isfinite(total.item()) and loss.item() < 1.4  # it trained (chance is log 4 = 1.39)
    print(f"soak {name} on {device}: {steps} steps in {seconds:.1f} s, memory growth after warm-up "
          f"{growth / 1024:.1f} KiB (limit {LIMIT / 1024:.0f} KiB)")
    assert growth < LIMIT, f"{name}: memory grew by {growth / 1e6:.2f} MB over {steps} steps"
