"""The recurrent kernels' tanh keeps relative accuracy near zero (a small LSTM cell state).

``2 sigmoid(2x) - 1`` equals tanh in real arithmetic but its rounding error is an ulp of 1, not of
tanh(x): 7% at x = 1e-6 in float32. These tests would fail with it: the LSTM below runs with
weights small enough that every gate pre-activation and cell state is tiny.
"""
import numpy as np
import pytest

import gpudl as gd
from gpudl.backend import fused_numpy
from gpudl.nn.rnn import LSTM
from tests.test_rnn import flat, reference_forward

# at this weight scale the g pre-activation and c are ~1e-5 (float32) and ~1e-11 (float64)
SCALE = {"float32": 1e-5, "float64": 1e-11}


def ulps(ours, exact, dtype):
    """|ours - exact| in units of the last place of ``exact`` in ``dtype``."""
    spacing = np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)
    return np.abs(ours.astype(np.float64) - exact) / spacing


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lstm_cell_tanh_is_accurate_to_a_few_ulps_at_every_magnitude(dtype):
    magnitudes = np.array([1e-30, 1e-12, 1e-6, 1e-4, 1e-2, 0.3, 1.0, 4.0, 9.0])
    x = np.concatenate([magnitudes, -magnitudes]).astype(dtype)
    batch, hidden = 1, x.size
    gates = np.zeros((batch, 4 * hidden), dtype)
    gates[:, 2 * hidden:3 * hidden] = x  # g's pre-activation; i = f = o = sigmoid(0) = 0.5
    zeros = np.zeros((batch, hidden), dtype)
    c, h, tanh_c = (np.empty((batch, hidden), dtype) for _ in range(3))
    fused_numpy.lstm_cell_forward(gates, np.zeros_like(gates), zeros, zeros, c, h, tanh_c)
    exact_g = np.tanh(x.astype(np.float64))  # float64 is exact enough to judge float32
    exact_tc = np.tanh(c.astype(np.float64))
    limit = 2 if dtype == "float32" else 0  # float64 is judged against NumPy's own float64 tanh
    assert ulps(gates[0, 2 * hidden:3 * hidden], exact_g, dtype).max() <= limit
    assert ulps(tanh_c[0], exact_tc, dtype).max() <= limit
    np.testing.assert_array_equal(c[0], np.asarray(0.5, dtype) * gates[0, 2 * hidden:3 * hidden])  # i g


def small_lstm(dtype, device, seed=0):
    gd.manual_seed(seed)
    module = LSTM(6, 5, num_layers=2, dtype=dtype, device=device)
    with gd.no_grad():
        for p in module.parameters():
            p.mul_(SCALE[dtype])
    return module


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lstm_with_a_small_cell_state_matches_a_float64_reference(dtype, device):
    module = small_lstm(dtype, device)
    reference = LSTM(6, 5, num_layers=2, dtype="float64")
    reference.load_state_dict(module.state_dict())
    x = np.random.default_rng(1).standard_normal((7, 3, 6))
    ours = flat(module(gd.tensor(x.astype(dtype), device=device)))
    want = flat(reference_forward(reference, "lstm", gd.tensor(x)))
    for got, exact in zip(ours, want):
        got, exact = got.numpy().astype(np.float64), exact.numpy()
        assert np.abs(exact).max() < 1e3 * SCALE[dtype]  # the state really is small
        # relative to each element, with a floor far below an ulp of 1 (where the old formula erred)
        tolerance = 1e-5 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(got, exact, rtol=tolerance, atol=tolerance * np.abs(exact).max())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lstm_with_a_small_cell_state_matches_pytorch(dtype, device):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: no side-by-side check")
    module = small_lstm(dtype, device)
    theirs = torch.nn.LSTM(6, 5, num_layers=2).to(getattr(torch, dtype))
    theirs.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in module.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((7, 3, 6)).astype(dtype)
    x_ours = gd.tensor(x, device=device, requires_grad=True)
    x_theirs = torch.tensor(x, requires_grad=True)
    ours, want = flat(module(x_ours)), flat(theirs(x_theirs))
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    weights = [np.random.default_rng(3 + k).standard_normal(o.shape).astype(dtype) for k, o in enumerate(ours)]
    for got, exact in zip(ours, want):
        exact = exact.detach().numpy()
        np.testing.assert_allclose(got.numpy(), exact, rtol=tolerance, atol=tolerance * np.abs(exact).max())
    sum((o * gd.tensor(w, device=device)).sum() for o, w in zip(ours, weights)).backward()
    sum((o * torch.tensor(w)).sum() for o, w in zip(want, weights)).backward()
    np.testing.assert_allclose(x_ours.grad.numpy(), x_theirs.grad.numpy(), rtol=tolerance,
                               atol=tolerance * np.abs(x_theirs.grad.numpy()).max())
    torch_params = dict(theirs.named_parameters())
    for name, p in module.named_parameters():
        exact = torch_params[name].grad.numpy()
        np.testing.assert_allclose(p.grad.numpy(), exact, rtol=10 * tolerance,
                                   atol=10 * tolerance * np.abs(exact).max(), err_msg=name)

