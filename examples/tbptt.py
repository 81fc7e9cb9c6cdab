"""Truncated backpropagation through time (TBPTT) with ``nn.LSTM``.

A long signal is cut into chunks of ``CHUNK`` steps. The LSTM state flows from one chunk into the
next, so the model sees the whole history, but the graph is cut at every chunk boundary with
``detach()``: each backward pass covers one chunk only, so memory and time per update stay fixed
however long the sequence is.

Task: predict the next value of 16 parallel streams of a noisy two-tone signal. Runs in seconds:

    PYTHONPATH=. python examples/tbptt.py
"""
import numpy as np

import gpudl as gd
from gpudl import nn, optim

STREAMS, LENGTH, CHUNK, HIDDEN = 16, 4000, 25, 32


def make_signal(rng):
    """[LENGTH + 1, STREAMS, 1]: sin(0.07 t) + 0.5 sin(0.31 t) + noise, each stream shifted."""
    t = np.arange(LENGTH + 1)[:, None] + rng.integers(0, 1000, STREAMS)[None, :]
    signal = np.sin(0.07 * t) + 0.5 * np.sin(0.31 * t) + 0.05 * rng.standard_normal(t.shape)
    return signal[:, :, None].astype(np.float32)


def main():
    gd.manual_seed(0)
    signal = make_signal(np.random.default_rng(0))
    lstm = nn.LSTM(1, HIDDEN)                    # time-major: [T, B, 1]
    head = nn.Linear(HIDDEN, 1)
    opt = optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=0.01)
    baseline = float(np.mean((signal[1:] - signal[:-1]) ** 2))  # "next = current"
    for epoch in range(2):
        state = None                             # zeros at the start of the sequence
        losses = []
        for start in range(0, LENGTH, CHUNK):
            x = gd.tensor(signal[start:start + CHUNK])
            target = gd.tensor(signal[start + 1:start + CHUNK + 1])
            output, state = lstm(x, state)
            loss = ((head(output) - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()                      # through this chunk only...
            opt.step()
            state = tuple(s.detach() for s in state)  # ...because the carried state is cut here
            losses.append(loss.item())
        print(f"epoch {epoch}: mean squared error {np.mean(losses[-40:]):.4f} "
              f"(repeating the last value: {baseline:.4f})")


if __name__ == "__main__":
    main()
