"""Whole recurrent sequences in one native call (gpudl.backend.native_recurrence): the same outputs
and gradients as the per-step form (one product and one cell launch per step) for every cell kind,
dtype, direction, variable lengths and batch sizes that do and do not split evenly over threads;
when the runner is used and when it is not."""
import numpy as np
import pytest

import gpudl
from gpudl.autograd import gradcheck
from gpudl.backend import blas, fused_native, fused_numpy
from gpudl.ops import rnn
from tests.native_loop_helpers import native_or_skip, without_runner

KINDS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


@pytest.fixture
def per_step(monkeypatch):
    """Runs ``function()`` with the per-step form (no whole-sequence runner)."""
    return without_runner(monkeypatch, "recurrence_runner")


def layer(kind, dtype, *, reverse=False, lengths=None, batch=5, steps=4, features=3, hidden=6,
          output_grads=True, state_grads=True):
    """Outputs of one layer and the gradients of all its inputs, as NumPy arrays."""
    rng = np.random.default_rng(7)
    gates = GATES[kind]

    def tensor(*shape, grad=True):
        return gpudl.tensor(rng.standard_normal(shape).astype(dtype), requires_grad=grad)
    x, h0, c0 = tensor(steps, batch, features), tensor(batch, hidden, grad=state_grads), tensor(batch, hidden)
    weights = (tensor(gates * hidden, features), tensor(gates * hidden, hidden), tensor(gates * hidden),
               tensor(gates * hidden))
    device_lengths = None if lengths is None else rnn.sequence_lengths(np.array(lengths), steps, batch, x.device)
    if kind == "lstm":
        outputs = rnn.lstm_layer(x, h0, c0, *weights, reverse=reverse, lengths=device_lengths)
    elif kind == "gru":
        outputs = rnn.gru_layer(x, h0, *weights, reverse=reverse, lengths=device_lengths)
    else:
        outputs = rnn.rnn_layer(x, h0, *weights, nonlinearity=kind[4:], reverse=reverse,
                                lengths=device_lengths)
    used = outputs if output_grads else outputs[1:]
    loss = sum((o * gpudl.tensor(rng.standard_normal(o.shape).astype(dtype))).sum() for o in used)
    loss.backward()
    inputs = (x, h0, c0) + weights if kind == "lstm" else (x, h0) + weights
    return [o.numpy() for o in outputs] + [t.grad.numpy() for t in inputs if t.requires_grad]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch, lengths", [(1, None), (5, None), (5, [4, 2, 1, 3, 4]), (67, None)])
def test_whole_sequence_equals_the_per_step_form(per_step, kind, dtype, tolerance, reverse, batch, lengths):
    native_or_skip()
    hidden = 40 if batch == 67 else 6  # 67 x 160 x 40 multiply-adds a step: split over threads
    run = lambda: layer(kind, dtype, reverse=reverse, lengths=lengths, batch=batch, hidden=hidden)  # noqa: E731
    for whole, stepped in zip(run(), per_step(run), strict=True):  # tolerance at the array's scale:
        scale = np.abs(stepped).max()  # summation orders differ, RNN tanh steps as its twin (glibc)
        np.testing.assert_allclose(whole, stepped, rtol=tolerance, atol=tolerance * scale)


@pytest.mark.parametrize("kind", KINDS)
def test_only_final_state_used_and_no_initial_state_gradient(per_step, kind):
    # dy absent (one zero state for every step) and the last step's product skipped
    native_or_skip()
    run = lambda: layer(kind, np.float64, output_grads=False, state_grads=False)  # noqa: E731
    for whole, stepped in zip(run(), per_step(run), strict=True):
        np.testing.assert_allclose(whole, stepped, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_through_the_whole_sequence_runner(kind):
    native_or_skip()
    assert fused_native.recurrence_runner(np.float64, (12, 3)) is not None
    rng = np.random.default_rng(3)
    gates, hidden = GATES[kind], 3
    x, h0 = (gpudl.tensor(rng.standard_normal(s), requires_grad=True) for s in ((4, 3, 2), (3, hidden)))
    w_ih, w_hh, b_ih, b_hh = (gpudl.tensor(rng.standard_normal(s) * 0.5, requires_grad=True)
                              for s in ((gates * hidden, 2), (gates * hidden, hidden), (gates * hidden,), (gates * hidden,)))
    lengths = rnn.sequence_lengths(np.array([4, 2, 3]), 4, 3, x.device)
    if kind == "lstm":
        c0 = gpudl.tensor(rng.standard_normal((3, hidden)), requires_grad=True)
        function = lambda *a: rnn.lstm_layer(*a, reverse=True, lengths=lengths)  # noqa: E731
        inputs = (x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    elif kind == "gru":
        function = lambda *a: rnn.gru_layer(*a, reverse=True, lengths=lengths)  # noqa: E731
        inputs = (x, h0, w_ih, w_hh, b_ih, b_hh)
    else:
        function = lambda *a: rnn.rnn_layer(*a, nonlinearity=kind[4:], reverse=True, lengths=lengths)  # noqa: E731
        inputs = (x, h0, w_ih, w_hh, b_ih, b_hh)
    assert gradcheck(lambda *a: list(function(*a)), *inputs)


def test_runner_serves_float32_and_float64_up_to_its_weight_size():
    native_or_skip()
    assert fused_native.recurrence_runner(np.float32, (512, 128)) is not None
    assert fused_native.recurrence_runner(np.float64, (512, 128)) is not None
    assert fused_native.recurrence_runner(np.float16, (512, 128)) is None
    assert fused_native.recurrence_runner(np.float32, (4096, 1024)) is None  # 16 MB: per step
    assert fused_numpy.recurrence_runner(np.float32, (512, 128)) is None  # the twins step


def test_no_runner_when_the_blas_keeps_its_own_threads(monkeypatch):
    native_or_skip()
    monkeypatch.setenv("GPUDL_BLAS_THREADS", "own")
    blas.reset()
    try:
        assert blas.single_thread_gemm(np.float32) is None
        assert fused_native.recurrence_runner(np.float32, (24, 6)) is None
        outputs = layer("lstm", np.float32)  # the per-step form with OpenBLAS's own threads
        assert all(np.isfinite(o).all() for o in outputs)
    finally:
        monkeypatch.delenv("GPUDL_BLAS_THREADS")
        blas.reset()


def test_runner_rejects_a_non_contiguous_operand():
    native_or_skip()
    runner = fused_native.recurrence_runner(np.float32, (6, 6))
    w = np.zeros((6, 6), np.float32).T  # a transposed view
    hs, xw, hw = np.zeros((3, 2, 6), np.float32), np.zeros((2, 2, 6), np.float32), np.zeros((2, 6), np.float32)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        runner.run("rnn_forward", w, None, 2, 2, False, hs, xw, hw, reverse=False)
