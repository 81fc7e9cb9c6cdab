"""Property tests (hypothesis) against NumPy: broadcasting, reductions, indexing and dtype
promotion over generated shapes, empty tensors included; layers on 0-size batches.

Each property runs on every device (through the CuPy test double in CI's third pass).
"""
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpudl as gd
from gpudl import nn

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
VALUES = st.floats(-8, 8, allow_nan=False, width=64)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3)


def array(draw, shape, elements=VALUES):
    return draw(hnp.arrays(np.float64, shape, elements=elements))


def on(device, values, requires_grad=False):
    return gd.tensor(values, device=device, requires_grad=requires_grad)


def sum_to_shape(grad, shape):
    """NumPy's reference for summing a broadcast gradient back to an input's shape."""
    lead = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(lead))) if lead else grad
    axes = tuple(k for k, n in enumerate(shape) if n == 1 and grad.shape[k] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


def assert_close(ours, expected):
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12, equal_nan=True)


# ------------------------------------------------------------------ broadcasting
BINARY = {  # op, NumPy op, d/da, d/db (elementwise, before summing over broadcast axes)
    "add": (lambda a, b: a + b, np.add, lambda a, b: np.ones_like(a + b), lambda a, b: np.ones_like(a + b)),
    "sub": (lambda a, b: a - b, np.subtract, lambda a, b: np.ones_like(a + b), lambda a, b: -np.ones_like(a + b)),
    "mul": (lambda a, b: a * b, np.multiply, lambda a, b: b + 0 * a, lambda a, b: a + 0 * b),
    "div": (lambda a, b: a / b, np.divide, lambda a, b: 1 / b + 0 * a, lambda a, b: -a / b ** 2),
    "maximum": (gd.maximum, np.maximum, None, None),
}


@pytest.mark.parametrize("name", list(BINARY))
@PROPERTY
@given(data=st.data())
def test_broadcasting_binary_ops_match_numpy_values_and_gradients(device, name, data):
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, min_side=0,
                                                         max_side=3))
    a_shape, b_shape = shapes.input_shapes
    a = array(data.draw, a_shape)
    # divisors kept away from 0 so that the reference stays finite
    b = array(data.draw, b_shape, st.floats(0.5, 8, width=64) | st.floats(-8, -0.5, width=64))
    op, numpy_op, da, db = BINARY[name]
    x, y = on(device, a, True), on(device, b, True)
    out = op(x, y)
    expected = numpy_op(a, b)
    assert out.shape == expected.shape == shapes.result_shape
    assert_close(out.numpy(), expected)
    weights = array(data.draw, expected.shape)
    (out * on(device, weights)).sum().backward()
    assert x.grad.shape == a.shape and y.grad.shape == b.shape
    if da is not None:
        assert_close(x.grad.numpy(), sum_to_shape(weights * da(a, b), a.shape))
        assert_close(y.grad.numpy(), sum_to_shape(weights * db(a, b), b.shape))


# ------------------------------------------------------------------ reductions
@st.composite
def reduction_case(draw):
    """A shape (0-size sides included), an axis (None, an int, negative too, or a tuple) and keepdims."""
    shape = draw(SHAPES)
    dims = len(shape)
    axes = [st.none()]
    if dims:
        axes += [st.integers(-dims, dims - 1), st.lists(st.integers(0, dims - 1), unique=True).map(tuple)]
    return shape, draw(st.one_of(*axes)), draw(st.booleans())


REDUCTIONS = ["sum", "mean", "prod", "max", "min", "var", "std"]


@pytest.mark.parametrize("name", REDUCTIONS)
@PROPERTY
@given(case=reduction_case(), data=st.data())
def test_reductions_match_numpy_including_empty_tensors(device, name, case, data):
    shape, axis, keepdims = case
    a = array(data.draw, shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of nothing is NaN, with a warning
        try:
            expected = getattr(np, name)(a, axis=axis, keepdims=keepdims)
        except ValueError:  # max/min of nothing: no identity
            with pytest.raises(ValueError, match=f"{name}: cannot reduce an empty tensor"):
                getattr(on(device, a), name)(axis=axis, keepdims=keepdims)
            return
        x = on(device, a, True)
        out = getattr(x, name)(axis=axis, keepdims=keepdims)
        assert out.shape == np.shape(expected)
        assert_close(out.numpy(), expected)
        weights = array(data.draw, np.shape(expected))
        (out * on(device, weights)).sum().backward()
    assert x.grad.shape == a.shape
    if name in ("sum", "mean"):  # every input element gets its output's weight (over the count, for mean)
        axes = tuple(range(len(shape))) if axis is None else tuple(np.atleast_1d(axis) % len(shape))
        kept = weights if keepdims else np.expand_dims(weights, axes)
        count = max(int(np.prod([shape[k] for k in axes])), 1) if name == "mean" else 1
        assert_close(x.grad.numpy(), np.broadcast_to(kept, shape) / count)


# ------------------------------------------------------------------ indexing
@PROPERTY
@given(data=st.data())
def test_basic_indexing_matches_numpy_and_routes_the_gradient(device, data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4))
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    a = array(data.draw, shape)
    x = on(device, a, True)
    out = x[index]
    expected = a[index]
    assert out.shape == expected.shape
    assert_close(out.numpy(), expected)
    weights = array(data.draw, expected.shape)
    (out * on(device, weights)).sum().backward()
    reference = np.zeros_like(a)
    reference[index] += weights  # a basic index never repeats an element
    assert_close(x.grad.numpy(), reference)


@PROPERTY
@given(data=st.data())
def test_integer_array_indexing_accumulates_repeated_rows(device, data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    rows = data.draw(st.lists(st.integers(-shape[0], shape[0] - 1), min_size=0, max_size=6))
    a = array(data.draw, shape)
    x = on(device, a, True)
    index = on(device, np.array(rows, dtype=np.int64))
    out = x[index]
    expected = a[np.array(rows, dtype=np.int64)]
    assert out.shape == expected.shape
    assert_close(out.numpy(), expected)
    weights = array(data.draw, expected.shape)
    (out * on(device, weights)).sum().backward()
    reference = np.zeros_like(a)
    np.add.at(reference, np.array(rows, dtype=np.int64), weights)
    assert_close(x.grad.numpy(), reference)


# ------------------------------------------------------------------ dtype promotion
DTYPES = ["bool", "int8", "int32", "int64", "float16", "float32", "float64"]
SCALARS = st.sampled_from([True, 3, -2, 0.5, 2.0])


@PROPERTY
@given(left=st.sampled_from(DTYPES), right=st.sampled_from(DTYPES), op=st.sampled_from(["add", "mul", "maximum"]),
       shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))
def test_dtype_promotion_between_tensors_follows_numpy(device, left, right, op, shape):
    assume(not (op == "add" and left == right == "bool"))  # NumPy's bool + bool is logical or
    a, b = np.ones(shape, left), np.full(shape, 2, right)
    ours = getattr(gd, op)(on(device, a), on(device, b)) if op == "maximum" else \
        (on(device, a) + on(device, b) if op == "add" else on(device, a) * on(device, b))
    expected = np.maximum(a, b) if op == "maximum" else (a + b if op == "add" else a * b)
    assert ours.dtype == expected.dtype, (left, right, op)
    np.testing.assert_array_equal(ours.numpy(), expected)


@PROPERTY
@given(dtype=st.sampled_from(DTYPES[1:]), scalar=SCALARS, op=st.sampled_from(["add", "mul", "div"]))
def test_python_scalars_are_weak_as_in_nep_50(device, dtype, scalar, op):
    a = np.full((2, 3), 3, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {"add": lambda v: v + scalar, "mul": lambda v: v * scalar, "div": lambda v: v / scalar}[op](a)
        ours = {"add": lambda v: v + scalar, "mul": lambda v: v * scalar, "div": lambda v: v / scalar}[op](
            on(device, a))
    assert ours.dtype == expected.dtype, (dtype, scalar, op)
    np.testing.assert_array_equal(ours.numpy(), expected)


# ------------------------------------------------------------------ 0-size batches
LAYERS = {
    "linear": (lambda: nn.Linear(4, 3), (0, 4), (0, 3)),
    "conv2d": (lambda: nn.Conv2d(2, 3, 3, padding=1), (0, 2, 5, 5), (0, 3, 5, 5)),
    "max_pool": (lambda: nn.MaxPool2d(2), (0, 2, 4, 4), (0, 2, 2, 2)),
    "avg_pool": (lambda: nn.AvgPool2d(2), (0, 2, 4, 4), (0, 2, 2, 2)),
    "layer_norm": (lambda: nn.LayerNorm(4), (0, 4), (0, 4)),
    "lstm": (lambda: nn.LSTM(4, 5, batch_first=True), (0, 3, 4), (0, 3, 5)),
    "mlp": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 2)),
            (0, 2, 4), (0, 2)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layers_take_a_0_size_batch(device, name):
    make, in_shape, out_shape = LAYERS[name]
    layer = make().to(device)
    x = gd.zeros(in_shape, device=device, requires_grad=True)
    out = layer(x)
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == out_shape
    out.sum().backward()
    assert x.grad.shape == in_shape
    for p in layer.parameters():
        assert p.grad is not None and not p.grad.numpy().any(), name  # nothing to learn from no samples


def test_losses_of_a_0_size_batch_follow_pytorch(device):
    logits = gd.zeros((0, 5), device=device, requires_grad=True)
    target = gd.zeros(0, dtype="int64", device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = nn.functional.cross_entropy(logits, target)
        total = nn.functional.cross_entropy(logits, target, reduction="sum")
        none = nn.functional.cross_entropy(logits, target, reduction="none")
        mse = nn.functional.mse_loss(logits, gd.zeros((0, 5), device=device))
    assert np.isnan(mean.item()) and np.isnan(mse.item())  # the mean of nothing, as PyTorch
    assert total.item() == 0.0 and none.shape == (0,)
    total.backward()
    assert logits.grad.shape == (0, 5)
