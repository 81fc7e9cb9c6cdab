"""LSTM training-step throughput, gpudl beside PyTorch (pytest-benchmark; not part of the tests).

One step: LSTM(28 -> 128, batch_first) over ``steps`` time steps, Linear(128 -> 10) on the last
hidden state, softmax cross-entropy, backward, plain SGD. Throughput is in
``extra_info["samples_per_s"]``; PyTorch runs with ``torch.set_num_threads(2)``.

    .venv/bin/python -m pytest bench/bench_rnn.py --benchmark-only --benchmark-columns=median
"""
import numpy as np
import pytest

import gpudl
from gpudl import nn, optim
from gpudl.nn.rnn import LSTM

from conftest import synchronize

INPUT, HIDDEN, CLASSES = 28, 128, 10
# (batch, steps): the batch sweep at 28 steps (rows of a 28x28 image), then the length sweep.
CASES = [(32, 28), (128, 28), (512, 28), (128, 7), (128, 112)]
IDS = [f"b{b}-t{t}" for b, t in CASES]


def _data(batch, steps):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((batch, steps, INPUT)).astype(np.float32),
            rng.integers(0, CLASSES, batch))


def _record(benchmark, batch):
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["samples_per_s"] = batch / benchmark.stats["median"]



@pytest.mark.parametrize("batch,steps", CASES, ids=IDS)
def test_lstm_train_step_gpudl(benchmark, batch, steps):
    lstm = LSTM(INPUT, HIDDEN, batch_first=True)
    head = nn.Linear(HIDDEN, CLASSES)
    opt = optim.SGD(list(lstm.parameters()) + list(head.parameters()), lr=0.01)
    x_host, t_host = _data(batch, steps)
    x, t = gpudl.tensor(x_host), gpudl.tensor(t_host)

    def step():
        _, (h_n, _) = lstm(x)
        loss = nn.functional.softmax_cross_entropy(head(h_n[-1]), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        synchronize()

    benchmark(step)
    _record(benchmark, batch)


@pytest.mark.parametrize("batch,steps", CASES, ids=IDS)
def test_lstm_train_step_torch(benchmark, torch_2_threads, batch, steps):
    torch = torch_2_threads
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(INPUT, HIDDEN, batch_first=True)
    head = torch.nn.Linear(HIDDEN, CLASSES)
    opt = torch.optim.SGD(list(lstm.parameters()) + list(head.parameters()), lr=0.01)
    x_host, t_host = _data(batch, steps)
    x, t = torch.from_numpy(x_host), torch.from_numpy(t_host)

    def step():
        _, (h_n, _) = lstm(x)
        loss = torch.nn.functional.cross_entropy(head(h_n[-1]), t)
        opt.zero_grad()
        loss.backward()
        opt.step()

    benchmark(step)
    _record(benchmark, batch)
